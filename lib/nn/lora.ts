// LoRA (Hu et al. 2021, as PEFT implements it): a frozen layer W gets a trainable low-rank update,
// y = x W^T + b + (alpha / r) · dropout(x) A^T B^T, with A [r, in] (Kaiming-uniform, PEFT's default)
// and B [out, r] (zeros, so an adapted model starts out computing exactly what it did). apply()
// attaches adapters to the Linear layers and the packed q/k/v projections its targets name, and
// freezes everything else; merge() folds B A into the weights (inference at no extra cost) and
// unmerge() takes it out again. The adapters are child modules (`lora.A`, `lora.B` under the layer),
// so the base weights keep their names and a model's stateDict carries its adapters.
import { noGrad } from '../autograd/grad_mode';
import { ValueError } from '../errors';
import { tidy } from '../memory';
import { zeros } from '../ops/creation';
import type { Tensor } from '../tensor';
import { MultiheadAttention } from './attention';
import type { InProjDelta } from './attention';
import { kaimingUniform_, zeros_ } from './init';
import { Dropout, Linear } from './layers';
import type { LinearDelta } from './layers';
import { Module, Parameter } from './module';

/** Options of apply. */
export interface LoRAOptions {
  /**
   * Which layers get adapters, by the end of their module path: a Linear ('mlp.fc', 'outProj',
   * 'lmHead'), or a MultiheadAttention's packed projection as a whole ('attn.inProj') or in parts
   * ('attn.q', 'attn.k', 'attn.v'; several parts share one adapter). A target that matches nothing
   * is an error.
   */
  targets: string[];
  /** The rank r (default 8, PEFT's). */
  rank?: number;
  /** The scale numerator: updates are scaled by alpha / rank (default 8, PEFT's lora_alpha). */
  alpha?: number;
  /** Dropout on the adapter's input (default 0). */
  dropout?: number;
}

/** The low-rank pair of one adapted layer (or of the selected parts of a packed projection). */
export class LoRA extends Module implements LinearDelta {
  /** Down projection [rank, inFeatures]. */
  A: Parameter;
  /** Up projection [outFeatures, rank] (outFeatures: the adapted rows). */
  B: Parameter;
  /** Dropout on the input. */
  drop: Dropout;
  /** alpha / rank. */
  readonly scale: number;
  /** Whether B A is folded into the base weight now. */
  merged = false;
  /** The rank r. */
  readonly rank: number;
  /** The scale numerator. */
  readonly alpha: number;

  /** An adapter of a [outFeatures, inFeatures] weight, its tensors of like's dtype and device. */
  constructor(inFeatures: number, outFeatures: number, rank: number, alpha: number, dropout: number, like: Tensor) {
    super();
    this.rank = rank;
    this.alpha = alpha;
    this.A = new Parameter(zeros([rank, inFeatures], { dtype: like.dtype, device: like.device }));
    kaimingUniform_(this.A, { a: Math.sqrt(5) });
    this.B = new Parameter(zeros([outFeatures, rank], { dtype: like.dtype, device: like.device }));
    zeros_(this.B);
    this.drop = new Dropout(dropout);
    this.scale = alpha / rank;
  }

  /** Whether forward's term is added (not once merged). */
  get active(): boolean {
    return !this.merged;
  }

  /** (alpha / rank) · dropout(x) A^T B^T. */
  override forward(x: Tensor): Tensor {
    return tidy(() => this.drop.forward(x).matmul(this.A.mT).matmul(this.B.mT).mul(this.scale));
  }

  /** The weight update (alpha / rank) · B A, [outFeatures, inFeatures]. */
  deltaWeight(): Tensor {
    return noGrad(() => tidy(() => this.B.matmul(this.A).mul(this.scale)));
  }

  override extraRepr(): string {
    return `rank=${this.rank}, alpha=${this.alpha}${this.merged ? ', merged' : ''}`;
  }
}

/** A LoRA on some of a MultiheadAttention's packed q/k/v projections (one A, B rows per part). */
export class InProjLoRA extends LoRA implements InProjDelta {
  /** The adapted parts, in order (0 q, 1 k, 2 v). */
  readonly parts: Array<0 | 1 | 2>;
  private readonly embedDim: number;

  /** An adapter of the given parts of a [3 embedDim, embedDim] packed projection. */
  constructor(embedDim: number, parts: Array<0 | 1 | 2>, rank: number, alpha: number, dropout: number, like: Tensor) {
    super(embedDim, embedDim * parts.length, rank, alpha, dropout, like);
    this.parts = parts;
    this.embedDim = embedDim;
  }

  /** Part i's term for input x, or null when part i is not adapted. */
  delta(i: 0 | 1 | 2, x: Tensor): Tensor | null {
    const at = this.parts.indexOf(i);
    if (at < 0) return null;
    const E = this.embedDim;
    return tidy(() => this.drop.forward(x).matmul(this.A.mT).matmul(this.B.narrow(0, at * E, E).mT).mul(this.scale));
  }

  override extraRepr(): string {
    return `${super.extraRepr()}, parts=${this.parts.map((p) => 'qkv'[p]).join('')}`;
  }
}

const PARTS: Record<string, Array<0 | 1 | 2>> = { inProj: [0, 1, 2], q: [0], k: [1], v: [2] };

function endsWithPath(path: string, target: string): boolean {
  return path === target || path.endsWith(`.${target}`);
}

/**
 * Adds LoRA adapters to the layers `targets` name and freezes every other parameter, so that only
 * the adapters train. Returns the adapted module paths. A model already adapted is an error.
 *
 * ```ts
 * nn.lora.apply(gpt, { targets: ['attn.inProj', 'mlp.fc'], rank: 8, alpha: 16 });
 * const opt = new optim.AdamW(nn.lora.parameters(gpt), { lr: 1e-3 });
 * ```
 */
export function apply(model: Module, opts: LoRAOptions): string[] {
  const op = 'lora.apply';
  if (!(model instanceof Module)) throw new ValueError(op, 'expected a Module');
  const targets = opts?.targets;
  if (!Array.isArray(targets) || !targets.length || !targets.every((x) => typeof x === 'string' && x.length > 0)) {
    throw new ValueError(op, 'targets must be a non-empty array of module paths (e.g. ["attn.inProj", "mlp.fc"])');
  }
  const rank = opts.rank ?? 8, alpha = opts.alpha ?? 8, dropout = opts.dropout ?? 0;
  if (!Number.isInteger(rank) || rank < 1) throw new ValueError(op, `rank must be a positive integer, got ${rank}`);
  if (!(alpha > 0)) throw new ValueError(op, `alpha must be > 0, got ${alpha}`);
  if (adapters(model).length) throw new ValueError(op, 'the model already has LoRA adapters');
  const used = new Set<string>();
  const plan: Array<() => void> = [];
  const adapted: string[] = [];
  for (const [path, m] of model.namedModules()) {
    if (m instanceof Linear) {
      const hit = targets.find((t) => endsWithPath(path, t));
      if (!hit) continue;
      used.add(hit);
      if (rank > Math.min(m.inFeatures, m.outFeatures)) throw new ValueError(op, `rank ${rank} exceeds ${path}'s size [${m.outFeatures}, ${m.inFeatures}]`);
      plan.push(() => (m.lora = new LoRA(m.inFeatures, m.outFeatures, rank, alpha, dropout, m.weight)));
      adapted.push(path);
    } else if (m instanceof MultiheadAttention) {
      const parts = new Set<0 | 1 | 2>();
      for (const t of targets) {
        for (const [name, ps] of Object.entries(PARTS)) {
          if (endsWithPath(`${path}.${name}`, t)) {
            used.add(t);
            for (const p of ps) parts.add(p);
          }
        }
      }
      if (!parts.size) continue;
      if (!m.inProjWeight) throw new ValueError(op, `${path} has separate q/k/v weights (kdim or vdim differ); target its projections only when packed`);
      plan.push(() => (m.inProjLora = new InProjLoRA(m.embedDim, [...parts].sort(), rank, alpha, dropout, m.inProjWeight!)));
      adapted.push(`${path}.inProj`);
    }
  }
  const unused = targets.filter((t) => !used.has(t));
  if (unused.length) throw new ValueError(op, `targets ${unused.map((t) => JSON.stringify(t)).join(', ')} match no Linear layer or attention projection of the model`);
  for (const p of model.parameters()) p.requiresGrad = false;
  for (const f of plan) f();
  return adapted;
}

/** The model's LoRA adapters, with the path of the module each adapts. */
export function adapters(model: Module): Array<[string, LoRA]> {
  const out: Array<[string, LoRA]> = [];
  for (const [path, m] of model.namedModules()) if (m instanceof LoRA) out.push([path, m]);
  return out;
}

/** The adapters' parameters: what an optimizer for LoRA fine-tuning takes. */
export function parameters(model: Module): Parameter[] {
  return adapters(model).flatMap(([, a]) => [a.A, a.B]);
}

/** The adapters' tensors by their names in the model's stateDict (e.g. 'blocks.0.mlp.fc.lora.A'). */
export function stateDict(model: Module): Map<string, Tensor> {
  const all = model.stateDict();
  return new Map([...all].filter(([k]) => /(^|\.)(lora|inProjLora)\.[AB]$/.test(k)));
}

/**
 * Folds every adapter into its base weight: W += (alpha / rank) B A. Forward then adds nothing. An
 * adapter on a tied weight (GPT's lmHead shares wte's) cannot be merged: the update would change
 * the other use too (a ValueError, before any weight changes).
 */
export function merge(model: Module): void {
  const uses = new Map<Tensor, string[]>();
  for (const [name, p] of model.namedParameters({ removeDuplicate: false })) uses.set(p, [...(uses.get(p) ?? []), name]);
  for (const [path, a] of adapters(model)) {
    const host = model.getSubmodule(path.replace(/\.(lora|inProjLora)$/, ''));
    const w = host instanceof Linear ? host.weight : null;
    const names = w ? uses.get(w) ?? [] : [];
    if (!a.merged && names.length > 1) {
      throw new ValueError('lora.merge', `the adapter of ${path.replace(/\.lora$/, '')} cannot be merged: its weight is tied (${names.join(', ')}), and merging would change every use`);
    }
  }
  for (const [path, a] of adapters(model)) {
    if (a.merged) continue;
    const host = model.getSubmodule(path.replace(/\.(lora|inProjLora)$/, ''));
    noGrad(() => tidy(() => addToBase(host, a, 1)));
    a.merged = true;
  }
}

/** Takes every merged adapter back out of its base weight (W -= (alpha / rank) B A). */
export function unmerge(model: Module): void {
  for (const [path, a] of adapters(model)) {
    if (!a.merged) continue;
    const host = model.getSubmodule(path.replace(/\.(lora|inProjLora)$/, ''));
    noGrad(() => tidy(() => addToBase(host, a, -1)));
    a.merged = false;
  }
}

function addToBase(host: Module, a: LoRA, sign: 1 | -1): void {
  const d = a.deltaWeight();
  if (host instanceof Linear) {
    host.weight.add_(sign === 1 ? d : d.neg());
  } else if (host instanceof MultiheadAttention && a instanceof InProjLoRA) {
    const E = host.embedDim;
    a.parts.forEach((p, at) => {
      const rows = host.inProjWeight!.narrow(0, p * E, E);
      const part = d.narrow(0, at * E, E);
      rows.add_(sign === 1 ? part : part.neg());
    });
  }
  d.dispose();
}

/** Merges every adapter and removes it: the model is a plain one again, its weights updated. */
export function mergeAndUnload(model: Module): void {
  merge(model);
  for (const [path, a] of adapters(model)) {
    const host = model.getSubmodule(path.replace(/\.(lora|inProjLora)$/, ''));
    if (host instanceof Linear) host.lora = null;
    else if (host instanceof MultiheadAttention) host.inProjLora = null;
    a.dispose();
  }
}
