// Attention: scaledDotProductAttention (functional), MultiheadAttention (self- and cross-attention,
// causal / padding / explicit masks, averaged weights) and KVCache for incremental decoding.
//
// Masks follow MultiheadAttention's convention everywhere in kiln: a bool mask is true where a
// query must NOT attend (note: torch's F.scaled_dot_product_attention uses the opposite); a float
// mask is added to the attention scores (-Infinity blocks). Causal masks are aligned to the end:
// with L queries and S keys, query i sits at position S - L + i and sees keys 0..S-L+i, which is the
// usual lower triangle when L = S and the right mask when queries extend a KV cache.
//
// Where no attention weights are asked for, there is no dropout on the probabilities and the only
// mask is the causal one, scaledDotProductAttention and MultiheadAttention run the fused
// flashAttention (lib/ops/attention.ts), which never holds the [L, S] scores; elsewhere (other
// masks, weights, dropout, devices without its kernel) they take the unfused path below.
import { isGradEnabled } from '../autograd/grad_mode';
import { flashAttentionEnabled } from '../cuda';
import { ShapeError, ValueError } from '../errors';
import { keep, tidy } from '../memory';
import { flashAttention, flashAttentionApplies } from '../ops/attention';
import { empty, tensor } from '../ops/creation';
import { linear } from '../ops/matmul';
import { dropout } from '../ops/random';
import { shapeStr } from '../shape';
import type { Tensor } from '../tensor';
import { zeros_, xavierUniform_ } from './init';
import { FactoryOptions, Linear, newParameter } from './layers';
import { Module, Parameter } from './module';

/** A bool [L, S] mask, true where key j lies after query i's position S - L + i. */
export function causalMask(L: number, S: number = L, opts: { device?: string } = {}): Tensor {
  if (!Number.isInteger(L) || !Number.isInteger(S) || L < 0 || S < L) {
    throw new ValueError('causalMask', `needs integers 0 <= L <= S, got L=${L}, S=${S}`);
  }
  const data = new Uint8Array(L * S);
  for (let i = 0; i < L; i++) data.fill(1, i * S + S - L + i + 1, (i + 1) * S);
  return tensor(data, { shape: [L, S], dtype: 'bool', device: opts.device ?? 'cpu' });
}

/** @internal The [L, S] causal mask as a view into a square causal mask of size >= S. */
export function causalView(square: Tensor, L: number, S: number): Tensor {
  return square.narrow(0, S - L, L).narrow(1, 0, S);
}

function combineMasks(masks: Array<Tensor | null | undefined>): { block: Tensor | null; add: Tensor | null } {
  let block: Tensor | null = null;
  let add: Tensor | null = null;
  for (const m of masks) {
    if (!m) continue;
    if (m.dtype === 'bool') block = block ? block.logicalOr(m) : m;
    else add = add ? add.add(m) : m;
  }
  return { block, add };
}

/**
 * softmax(q k^T * scale + masks) v over the last two dims of q [..., L, D], k [..., S, D] and
 * v [..., S, Dv]; leading dims broadcast. Returns the output and the attention probabilities
 * (before dropout). Masks: bool true = blocked, float = added; all broadcast to [..., L, S].
 */
export function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: { masks?: Array<Tensor | null | undefined>; dropoutP?: number; scale?: number } = {},
): {
  /** softmax(...) v: [..., L, Dv]. */
  output: Tensor;
  /** The attention probabilities [..., L, S], before dropout. */
  probs: Tensor;
} {
  const D = q.shape[q.ndim - 1];
  if (k.shape[k.ndim - 1] !== D || k.shape[k.ndim - 2] !== v.shape[v.ndim - 2]) {
    throw new ShapeError('attention', `q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)} and v ${shapeStr(v.shape)} do not fit`);
  }
  return tidy(() => {
    let scores = q.mul(opts.scale ?? 1 / Math.sqrt(D)).matmul(k.mT);
    const { block, add } = combineMasks(opts.masks ?? []);
    if (block) scores = scores.maskedFill(block, -Infinity);
    if (add) scores = scores.add(add);
    const probs = scores.softmax(-1);
    const p = opts.dropoutP ? dropout(probs, opts.dropoutP, true) : probs;
    return { output: p.matmul(v), probs };
  });
}

// Whether flashAttention takes these operands: q [B, H, L, D] and k, v [B, H, S, D] of one dtype and
// device with a fused kernel (and L <= S when causal: the end-aligned mask needs it); on CUDA unless
// kiln.cuda.setFlashAttention(false).
function fusedFits(q: Tensor, k: Tensor, v: Tensor, causal: boolean): boolean {
  const same = (a: Tensor) => a.ndim === 4 && a.dtype === q.dtype && a._dev === q._dev;
  if ((q._dev !== -1 && !flashAttentionEnabled()) || q.ndim !== 4 || !same(k) || !same(v) || !flashAttentionApplies(q)) return false;
  const [B, H, L, D] = q.shape;
  const S = k.shape[2];
  return k.shape[0] === B && k.shape[1] === H && k.shape[3] === D && v.shape.every((n, i) => n === k.shape[i]) && S > 0 && (!causal || L <= S);
}

/**
 * Attention over q [..., L, D], k [..., S, D], v [..., S, Dv] (like torch's
 * F.scaled_dot_product_attention, except that a bool attnMask is true where attention is BLOCKED,
 * as in MultiheadAttention). isCausal adds the end-aligned causal mask.
 */
export function scaledDotProductAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: { attnMask?: Tensor | null; dropoutP?: number; isCausal?: boolean; scale?: number } = {},
): Tensor {
  if (!opts.attnMask && !opts.dropoutP && fusedFits(q, k, v, opts.isCausal ?? false)) {
    return flashAttention(q, k, v, { causal: opts.isCausal, scale: opts.scale });
  }
  return tidy(() => {
    const L = q.shape[q.ndim - 2], S = k.shape[k.ndim - 2];
    const causal = opts.isCausal ? causalMask(L, S, { device: q.device }) : null;
    return attention(q, k, v, { masks: [opts.attnMask, causal], dropoutP: opts.dropoutP, scale: opts.scale }).output;
  });
}

/**
 * Keys and values of one attention layer kept across decoding steps. append() writes this step's
 * [B, H, L, D] keys and values after the cached ones and returns views of all of them. Storage is
 * preallocated (capacity positions, doubling when full), so a step copies only its own positions.
 * The cache keeps no autograd history: use it under kiln.noGrad().
 */
export class KVCache {
  #k: Tensor | null = null;
  #v: Tensor | null = null;
  #len = 0;
  /** Positions preallocated at the first append (0: what the first append needs); the storage doubles when full. */
  readonly capacity: number;
  /** An empty cache; capacity preallocates that many positions at the first append (default 0). */
  constructor(capacity = 0) {
    this.capacity = capacity;
  }

  /** Number of cached positions. */
  get length(): number {
    return this.#len;
  }

  /**
   * Appends this step's keys and values [B, H, L, D] (same B, H, D, dtype and device as before) and
   * returns views [B, H, length, D] of everything cached. A ShapeError when they do not fit; a
   * ValueError for inputs that require grad while grad mode is on.
   */
  append(k: Tensor, v: Tensor): [Tensor, Tensor] {
    if (isGradEnabled() && (k.requiresGrad || v.requiresGrad)) {
      throw new ValueError('KVCache.append', 'the cache keeps no autograd history; run incremental decoding under kiln.noGrad()');
    }
    if (k.ndim !== 4 || v.ndim !== 4 || k.shape[0] !== v.shape[0] || k.shape[1] !== v.shape[1] || k.shape[2] !== v.shape[2]) {
      throw new ShapeError('KVCache.append', `expects keys and values [B, H, L, D] of one length, got ${shapeStr(k.shape)} and ${shapeStr(v.shape)}`);
    }
    const L = k.shape[2];
    if (this.#k && this.#v) {
      const fits = (c: Tensor, x: Tensor) =>
        c.shape[0] === x.shape[0] && c.shape[1] === x.shape[1] && c.shape[3] === x.shape[3] && c.dtype === x.dtype && c.device === x.device;
      if (!fits(this.#k, k) || !fits(this.#v, v)) {
        throw new ShapeError(
          'KVCache.append',
          `keys ${shapeStr(k.shape)} ${k.dtype} and values ${shapeStr(v.shape)} ${v.dtype} do not fit the cache ` +
            `(${shapeStr(this.#k.shape)} ${this.#k.dtype}, ${shapeStr(this.#v.shape)} ${this.#v.dtype})`,
        );
      }
    }
    const need = this.#len + L;
    if (!this.#k || this.#k.shape[2] < need) {
      const cap = Math.max(need, this.capacity, 2 * (this.#k?.shape[2] ?? 0));
      this.#k = this.grow(this.#k, k, cap);
      this.#v = this.grow(this.#v, v, cap);
    }
    const kb = this.#k, vb = this.#v!;
    tidy(() => {
      kb.narrow(2, this.#len, L).copy_(k);
      vb.narrow(2, this.#len, L).copy_(v);
    });
    this.#len = need;
    return [kb.narrow(2, 0, need), vb.narrow(2, 0, need)];
  }

  private grow(old: Tensor | null, like: Tensor, cap: number): Tensor {
    const [B, H, , D] = like.shape;
    const buf = keep(empty([B, H, cap, D], { dtype: like.dtype, device: like.device }));
    if (old) {
      tidy(() => void buf.narrow(2, 0, this.#len).copy_(old.narrow(2, 0, this.#len)));
      old.dispose();
    }
    return buf;
  }

  /** Forgets the cached positions (the storage is kept for reuse). */
  reset(): void {
    this.#len = 0;
  }

  /** Frees the cached keys and values; the cache can be used again afterwards. */
  dispose(): void {
    this.#k?.dispose();
    this.#v?.dispose();
    this.#k = this.#v = null;
    this.#len = 0;
  }
  /** dispose(), for `using` declarations. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** Options of MultiheadAttention (plus dtype and device of its parameters). */
export interface MultiheadAttentionOptions extends FactoryOptions {
  /** Dropout on the attention probabilities in training mode (default 0). */
  dropout?: number;
  /** Biases on the input and output projections (default true). */
  bias?: boolean;
  /** Feature size of key when it differs from embedDim (cross-attention). */
  kdim?: number;
  /** Feature size of value when it differs from embedDim. */
  vdim?: number;
  /** Inputs [B, L, E] (default true); false means [L, B, E]. */
  batchFirst?: boolean;
}

/**
 * Options of MultiheadAttention.forward (like the keyword arguments of
 * torch.nn.MultiheadAttention.forward).
 */
export interface AttentionForwardOptions {
  /** Shape [B, S], true (or -Infinity) where a key is padding and must be ignored. */
  keyPaddingMask?: Tensor | null;
  /** [L, S], [B * numHeads, L, S] or broadcastable to [B, numHeads, L, S]: bool true = blocked, float = added. */
  attnMask?: Tensor | null;
  /** Adds the (end-aligned) causal mask. */
  isCausal?: boolean;
  /** Also return the attention probabilities (default false). */
  needWeights?: boolean;
  /** With needWeights, average the probabilities over heads ([B, L, S]); else [B, numHeads, L, S] (default true). */
  averageAttnWeights?: boolean;
  /** Incremental decoding: this call's keys/values are appended to the cache and queries attend to all of it. */
  kvCache?: KVCache;
}

/** What nn.lora adds to a MultiheadAttention's q/k/v projections. */
export interface InProjDelta extends Module {
  /** Whether its terms are added (false once merged into the weights). */
  readonly active: boolean;
  /** The term projection i (0 q, 1 k, 2 v) adds for input x, or null when it adapts no such part. */
  delta(i: 0 | 1 | 2, x: Tensor): Tensor | null;
}

/**
 * Multi-head attention like torch.nn.MultiheadAttention (batchFirst by default). When key and value
 * have embedDim features the three input projections are one packed weight inProjWeight [3E, E]
 * (one GEMM for self-attention); otherwise qProjWeight, kProjWeight and vProjWeight. The packed
 * input bias is inProjBias [3E]; outProj is a Linear.
 */
export class MultiheadAttention extends Module {
  /** Packed q, k and v projection weight [3E, E] when kdim and vdim equal embedDim, else null. */
  inProjWeight: Parameter | null;
  /** Query projection [E, E] when the projections are not packed, else null. */
  qProjWeight: Parameter | null;
  /** Key projection [E, kdim] when the projections are not packed, else null. */
  kProjWeight: Parameter | null;
  /** Value projection [E, vdim] when the projections are not packed, else null. */
  vProjWeight: Parameter | null;
  /** Packed q, k and v projection bias [3E] (null without bias). */
  inProjBias: Parameter | null;
  /** The output projection E -> E. */
  outProj: Linear;
  /**
   * A low-rank adapter of the q/k/v input projection (nn.lora.apply sets it; null without):
   * delta(i, x) is what projection i (0 q, 1 k, 2 v) adds for input x, or null for a part it leaves
   * alone.
   */
  inProjLora: InProjDelta | null = null;
  /** E, the model width: query features and output features. */
  readonly embedDim: number;
  /** Number of attention heads. */
  readonly numHeads: number;
  /** Features per head: embedDim / numHeads. */
  readonly headDim: number;
  /** Features of key inputs. */
  readonly kdim: number;
  /** Features of value inputs. */
  readonly vdim: number;
  /** Dropout probability on the attention probabilities in training mode. */
  readonly dropout: number;
  /** Whether inputs are [B, L, E] (true) or [L, B, E]. */
  readonly batchFirst: boolean;

  constructor(embedDim: number, numHeads: number, opts: MultiheadAttentionOptions = {}) {
    super();
    if (!Number.isInteger(embedDim) || !Number.isInteger(numHeads) || embedDim <= 0 || numHeads <= 0 || embedDim % numHeads !== 0) {
      throw new ValueError('MultiheadAttention', `embedDim (${embedDim}) must be a positive multiple of numHeads (${numHeads})`);
    }
    const dropoutP = opts.dropout ?? 0;
    if (!(dropoutP >= 0 && dropoutP <= 1)) throw new ValueError('MultiheadAttention', `dropout must be in [0, 1], got ${dropoutP}`);
    this.embedDim = embedDim;
    this.numHeads = numHeads;
    this.headDim = embedDim / numHeads;
    this.kdim = opts.kdim ?? embedDim;
    this.vdim = opts.vdim ?? embedDim;
    this.dropout = dropoutP;
    this.batchFirst = opts.batchFirst ?? true;
    const packed = this.kdim === embedDim && this.vdim === embedDim;
    const E = embedDim;
    this.inProjWeight = packed ? newParameter([3 * E, E], opts, xavierUniform_) : null;
    this.qProjWeight = packed ? null : newParameter([E, E], opts, xavierUniform_);
    this.kProjWeight = packed ? null : newParameter([E, this.kdim], opts, xavierUniform_);
    this.vProjWeight = packed ? null : newParameter([E, this.vdim], opts, xavierUniform_);
    this.inProjBias = opts.bias === false ? null : newParameter([3 * E], opts, zeros_);
    this.outProj = new Linear(E, E, opts);
    if (this.outProj.bias) zeros_(this.outProj.bias);
  }

  /** Projection weight and bias for q (0), k (1) or v (2). */
  private projection(i: 0 | 1 | 2): [Tensor, Tensor | null] {
    const E = this.embedDim;
    const w = this.inProjWeight ? this.inProjWeight.narrow(0, i * E, E) : [this.qProjWeight, this.kProjWeight, this.vProjWeight][i]!;
    return [w, this.inProjBias ? this.inProjBias.narrow(0, i * E, E) : null];
  }

  /** The [L, S] causal mask, from a square buffer grown on demand (built once per size, not per call). */
  private causal(L: number, S: number, device: string): Tensor {
    let square = this.getBuffer('causalMask');
    if (!square || square.shape[0] < S || square.device !== device) {
      const n = Math.max(S, 2 * (square?.shape[0] ?? 0));
      square = this.registerBuffer('causalMask', causalMask(n, n, { device }), { persistent: false });
    }
    return causalView(square, L, S);
  }

  /**
   * Attends from query [B, L, E] to key [B, S, kdim] and value [B, S, vdim] ([L, B, E] ... when not
   * batchFirst; unbatched [L, E] ... also work). Self-attention passes the same tensor three times
   * (one packed projection); cross-attention passes the memory as key and value.
   */
  override forward(query: Tensor, key: Tensor, value: Tensor, opts: AttentionForwardOptions = {}): {
    /** The attended values after outProj, shaped like query. */
    output: Tensor;
    /** With needWeights: the attention probabilities, [B, L, S] averaged over heads or [B, numHeads, L, S]. */
    weights?: Tensor;
  } {
    return tidy(() => {
      const unbatched = query.ndim === 2;
      let q3 = query, k3 = key, v3 = value;
      if (unbatched) [q3, k3, v3] = [query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)];
      else if (!this.batchFirst) [q3, k3, v3] = [query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)];
      const E = this.embedDim, H = this.numHeads, D = this.headDim;
      const bad =
        q3.ndim !== 3 || k3.ndim !== 3 || v3.ndim !== 3 ||
        q3.shape[2] !== E || k3.shape[2] !== this.kdim || v3.shape[2] !== this.vdim ||
        k3.shape[1] !== v3.shape[1] || k3.shape[0] !== q3.shape[0] || v3.shape[0] !== q3.shape[0];
      if (bad) {
        throw new ShapeError(
          'MultiheadAttention',
          `query ${shapeStr(query.shape)}, key ${shapeStr(key.shape)} and value ${shapeStr(value.shape)} do not fit ` +
            `embedDim=${E}, kdim=${this.kdim}, vdim=${this.vdim} (batchFirst=${this.batchFirst})`,
        );
      }
      const [B, L] = q3.shape;
      let q: Tensor, k: Tensor, v: Tensor;
      if (this.inProjWeight && query === key && key === value) {
        [q, k, v] = linear(q3, this.inProjWeight, this.inProjBias).split(E, -1);
      } else {
        q = linear(q3, ...this.projection(0));
        k = linear(k3, ...this.projection(1));
        v = linear(v3, ...this.projection(2));
      }
      const lora = this.inProjLora;
      if (lora && lora.active) {
        const add = (i: 0 | 1 | 2, proj: Tensor, x: Tensor) => {
          const d = lora.delta(i, x);
          return d ? proj.add(d) : proj;
        };
        [q, k, v] = [add(0, q, q3), add(1, k, k3), add(2, v, v3)];
      }
      const heads = (x: Tensor) => x.reshape(B, x.shape[1], H, D).transpose(1, 2);
      [q, k, v] = [heads(q), heads(k), heads(v)];
      if (opts.kvCache) [k, v] = opts.kvCache.append(k, v);
      const S = k.shape[2];

      const dropoutP = this.training ? this.dropout : 0;
      const kpm = opts.keyPaddingMask;
      if (!opts.needWeights && !opts.attnMask && !kpm && !dropoutP && fusedFits(q, k, v, opts.isCausal ?? false)) {
        return { output: this.finish(flashAttention(q, k, v, { causal: opts.isCausal }), B, L, unbatched) };
      }
      const masks: Tensor[] = [];
      if (opts.attnMask) masks.push(this.attnMask(opts.attnMask, B, L, S));
      if (opts.isCausal) masks.push(this.causal(L, S, query.device));
      if (kpm) {
        if (kpm.ndim !== 2 || kpm.shape[0] !== B || kpm.shape[1] !== S) {
          throw new ShapeError('MultiheadAttention', `keyPaddingMask must be [${B}, ${S}] (batch, keys), got ${shapeStr(kpm.shape)}`);
        }
        masks.push(kpm.reshape(B, 1, 1, S));
      }
      const { output, probs } = attention(q, k, v, { masks, dropoutP });
      const out = this.finish(output, B, L, unbatched);
      if (!opts.needWeights) return { output: out };
      let weights = (opts.averageAttnWeights ?? true) ? probs.mean(1) : probs;
      if (unbatched) weights = weights.squeeze(0);
      return { output: out, weights };
    });
  }

  /** The heads' outputs [B, H, L, D] merged and projected, in the layout of the query. */
  private finish(heads: Tensor, B: number, L: number, unbatched: boolean): Tensor {
    const out = this.outProj.forward(heads.transpose(1, 2).reshape(B, L, this.embedDim));
    if (unbatched) return out.squeeze(0);
    return this.batchFirst ? out : out.transpose(0, 1);
  }

  private attnMask(m: Tensor, B: number, L: number, S: number): Tensor {
    const H = this.numHeads;
    const tail = m.shape.slice(-2);
    const ok = m.ndim >= 2 && m.ndim <= 4 && tail[0] === L && tail[1] === S && (m.ndim !== 3 || m.shape[0] === B * H || m.shape[0] === 1);
    if (!ok) {
      throw new ShapeError('MultiheadAttention', `attnMask must be [${L}, ${S}], [${B * H}, ${L}, ${S}] or broadcastable to [${B}, ${H}, ${L}, ${S}], got ${shapeStr(m.shape)}`);
    }
    return m.ndim === 3 && m.shape[0] === B * H ? m.reshape(B, H, L, S) : m;
  }

  override extraRepr(): string {
    return `embedDim=${this.embedDim}, numHeads=${this.numHeads}, dropout=${this.dropout}`;
  }
}
