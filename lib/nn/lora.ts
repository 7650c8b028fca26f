// LoRA (Hu et al. 2021, as PEFT implements it): a frozen layer W gets a trainable low-rank update,
// y = x W^T + b + (alpha / r) · dropout(x) A^T B^T, with A [r, in] (Kaiming-uniform, PEFT's default)
// and B [out, r] (zeros, so an adapted model starts out computing exactly what it did). apply()
// attaches adapters to the Linear layers and the packed q/k/v projections its targets name, and
// freezes everything else; merge() folds B A into the weights (inference at no extra cost) and
// unmerge() takes it out again. The adapters are child modules (`lora.A`, `lora.B` under the layer),
// so the base weights keep their names and a model's stateDict carries its adapters.
import * as fs from 'fs';
import * as path from 'path';
import { noGrad } from '../autograd/grad_mode';
import { FormatError, ShapeError, ValueError } from '../errors';
import { writeFileAtomic } from '../io/atomic';
import { loadSafetensors, saveSafetensors } from '../io/safetensors';
import { tidy } from '../memory';
import { zeros } from '../ops/creation';
import { shapeStr } from '../shape';
import type { Tensor } from '../tensor';
import { MultiheadAttention } from './attention';
import type { InProjDelta } from './attention';
import { kaimingUniform_, zeros_ } from './init';
import { Dropout, Linear } from './layers';
import type { LinearDelta } from './layers';
import { GPT } from './gpt';
import { gpt2ModuleName, gptModulePath } from './gpt_hf';
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

/** The path of the module an adapter at `path` adapts (its parent: a Linear or a MultiheadAttention). */
function hostPath(path: string): string {
  return path.replace(/\.(lora|inProjLora)$/, '');
}

/** The model's LoRA adapters, with the path of each (a child of the module it adapts). */
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
  const out = new Map<string, Tensor>();
  for (const [k, t] of model.stateDict()) {
    if (/(^|\.)(lora|inProjLora)\.[AB]$/.test(k)) out.set(k, t);
    else t.dispose();   // stateDict's handles on the base weights (the weights stay)
  }
  return out;
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
    const host = model.getSubmodule(hostPath(path));
    const w = host instanceof Linear ? host.weight : null;
    const names = w ? uses.get(w) ?? [] : [];
    if (!a.merged && names.length > 1) {
      throw new ValueError('lora.merge', `the adapter of ${hostPath(path)} cannot be merged: its weight is tied (${names.join(', ')}), and merging would change every use`);
    }
  }
  setMerged(model, true);
}

/** Takes every merged adapter back out of its base weight (W -= (alpha / rank) B A). */
export function unmerge(model: Module): void {
  setMerged(model, false);
}

/** Adds (merged) or subtracts each adapter's update to its base weight unless already so. */
function setMerged(model: Module, merged: boolean): void {
  for (const [path, a] of adapters(model)) {
    if (a.merged === merged) continue;
    const host = model.getSubmodule(hostPath(path));
    noGrad(() => tidy(() => addToBase(host, a, merged ? 1 : -1)));
    a.merged = merged;
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
    const host = model.getSubmodule(hostPath(path));
    if (host instanceof Linear) host.lora = null;
    else if (host instanceof MultiheadAttention) host.inProjLora = null;
    a.dispose();
  }
}

// ---- PEFT's adapter folders (GPT models) ----

/** Options of saveAdapter. */
export interface SaveAdapterOptions {
  /** What adapter_config.json names as the base model (base_model_name_or_path; default null). */
  baseModel?: string | null;
}

/**
 * Writes a GPT's adapters as a PEFT LoRA folder: adapter_config.json and adapter_model.safetensors
 * with keys `base_model.model.transformer.h.0.attn.c_attn.lora_A.weight` ([r, in]) and `...lora_B.weight`
 * ([out, r]) in the layout PEFT saves for Hugging Face's GPT-2 (fan_in_fan_out: its Conv1D layers),
 * for `PeftModel.from_pretrained(GPT2LMHeadModel, dir)`. An adapter on some of q/k/v is
 * written as one on c_attn whose B rows for the other parts are zero (the same update).
 */
export function saveAdapter(model: GPT, dir: string, opts: SaveAdapterOptions = {}): void {
  const op = 'lora.saveAdapter';
  if (!(model instanceof GPT)) throw new ValueError(op, 'PEFT\'s layout is defined here for nn.GPT models (Hugging Face GPT-2 names)');
  const list = adapters(model);
  if (!list.length) throw new ValueError(op, 'the model has no LoRA adapters (nn.lora.apply first)');
  const first = list[0][1];
  const out = new Map<string, Tensor>();
  const made: Tensor[] = [];
  const modules: string[] = [];
  try {
    noGrad(() => {
      for (const [path, a] of list) {
        if (a.rank !== first.rank || a.alpha !== first.alpha) throw new ValueError(op, 'the adapters differ in rank or alpha; one adapter_config.json holds one of each');
        const host = hostPath(path);
        const hf = gpt2ModuleName(host);
        if (!hf) throw new ValueError(op, `${host} has no Hugging Face GPT-2 name`);
        modules.push(hf);
        let B: Tensor = a.B;
        if (a instanceof InProjLoRA && a.parts.length < 3) {
          const E = a.A.shape[1];
          B = zeros([3 * E, a.rank], { dtype: a.B.dtype, device: a.B.device });
          made.push(B);
          a.parts.forEach((p, at) => B.narrow(0, p * E, E).copy_(a.B.narrow(0, at * E, E)));
        }
        // saveSafetensors reads any device.
        out.set(`base_model.model.${hf}.lora_A.weight`, a.A);
        out.set(`base_model.model.${hf}.lora_B.weight`, B);
      }
    });
    fs.mkdirSync(dir, { recursive: true });
    saveSafetensors(path.join(dir, 'adapter_model.safetensors'), out, { format: 'pt' });
  } finally {
    for (const t of made) t.dispose();
  }
  const config = {
    peft_type: 'LORA', task_type: 'CAUSAL_LM', r: first.rank, lora_alpha: first.alpha, lora_dropout: first.drop.p,
    target_modules: [...new Set(modules)].sort(), fan_in_fan_out: true, bias: 'none', inference_mode: true, modules_to_save: null,
    init_lora_weights: true, base_model_name_or_path: opts.baseModel ?? null,
  };
  writeFileAtomic(path.join(dir, 'adapter_config.json'), `${JSON.stringify(config, null, 2)}\n`);
}

/**
 * Adds the adapters of a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors, for a
 * Hugging Face GPT-2) to a GPT with the base weights already loaded, freezing the rest as apply
 * does. Returns the adapted module paths.
 */
export function loadAdapter(model: GPT, dir: string): string[] {
  const op = 'lora.loadAdapter';
  if (!(model instanceof GPT)) throw new ValueError(op, 'PEFT\'s layout is defined here for nn.GPT models (Hugging Face GPT-2 names)');
  const configFile = path.join(dir, 'adapter_config.json'), weightsFile = path.join(dir, 'adapter_model.safetensors');
  for (const f of [configFile, weightsFile]) if (!fs.existsSync(f)) throw new ValueError(op, `${dir} has no ${path.basename(f)}`);
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  } catch (e) {
    throw new FormatError(op, `${configFile} is not valid JSON: ${(e as Error).message}`);
  }
  if (cfg?.peft_type !== 'LORA') throw new ValueError(op, `${configFile}: peft_type is ${JSON.stringify(cfg?.peft_type)}, not "LORA"`);
  const rank = cfg.r, alpha = cfg.lora_alpha ?? 8, dropout = cfg.lora_dropout ?? 0;
  if (!Number.isInteger(rank) || (rank as number) < 1) throw new ValueError(op, `${configFile}: r must be a positive integer, got ${JSON.stringify(rank)}`);
  if (typeof alpha !== 'number' || typeof dropout !== 'number') throw new ValueError(op, `${configFile}: lora_alpha and lora_dropout must be numbers`);
  for (const k of ['rank_pattern', 'alpha_pattern']) {
    const v = cfg[k];
    if (v && typeof v === 'object' && Object.keys(v).length) throw new ValueError(op, `${configFile}: ${k} (per-module ranks) is not supported`);
  }
  if (cfg.use_dora === true) throw new ValueError(op, `${configFile}: DoRA adapters are not supported`);
  const { tensors } = loadSafetensors(weightsFile);
  try {
    const pairs = new Map<string, { A?: Tensor; B?: Tensor }>();
    for (const [k, t] of tensors) {
      const m = /^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(k);
      const module = m && gptModulePath(m[1]);
      // An attention's packed projection is targeted as '<path>.inProj'.
      const target = module && (/\.attn$/.test(module) ? `${module}.inProj` : module);
      if (!m || !target) throw new FormatError(op, `${weightsFile}: unexpected tensor ${k} (expected base_model.model.<GPT-2 module>.lora_A/B.weight)`);
      const p = pairs.get(target) ?? {};
      p[m[2] as 'A' | 'B'] = t;
      pairs.set(target, p);
    }
    for (const [target, p] of pairs) if (!p.A || !p.B) throw new FormatError(op, `${weightsFile}: ${target} has lora_${p.A ? 'B' : 'A'} missing`);
    const adapted = apply(model, { targets: [...pairs.keys()], rank: rank as number, alpha, dropout });
    noGrad(() => {
      for (const [target, p] of pairs) {
        const host = model.getSubmodule(target.replace(/\.inProj$/, ''));
        const a = host instanceof Linear ? host.lora : host instanceof MultiheadAttention ? host.inProjLora : null;
        if (!(a instanceof LoRA)) throw new ValueError(op, `${target} got no adapter`);
        for (const [name, src, dst] of [['lora_A', p.A!, a.A], ['lora_B', p.B!, a.B]] as const) {
          if (src.shape.join() !== dst.shape.join()) {
            throw new ShapeError(op, `${weightsFile}: ${target}'s ${name} has shape ${shapeStr(src.shape)}, the model needs ${shapeStr(dst.shape)}`);
          }
          dst.copy_(src);
        }
      }
    });
    return adapted;
  } finally {
    for (const t of tensors.values()) t.dispose();
  }
}
