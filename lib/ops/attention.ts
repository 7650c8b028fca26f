// Fused causal or full attention (native/ops/attention.h): softmax(q k^T * scale) v over
// [B, H, T, D] tensors computed tile by tile with an online softmax, so the [L, S] score matrix is
// never held, FlashAttention-2 style. The forward saves each query row's log-sum-exp; the backward is
// one fused kernel that recomputes the probabilities tile by tile. Goes through defineOp (autocast
// computes it in the low-precision dtype; a half dtype without a kernel computes in float32).
// nn.scaledDotProductAttention and nn.MultiheadAttention call it where it applies and keep the
// unfused path elsewhere (flashAttentionApplies).
import { recordOp } from '../autograd/engine';
import { isFloating } from '../dtype';
import { DTypeError, DeviceError, ShapeError, ValueError } from '../errors';
import { nativeExports } from '../native';
import { shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { bindKernels, defineOp, fillOutputs, kernelDTypes } from './dispatch';

const K = bindKernels('attention', {
  attentionForward: '(q:T, k:T, v:T, causal:b, scale:f, out:T, lse:T) -> void',
  attentionBackward: '(q:T, k:T, v:T, out:T, dout:T, lse:T, causal:b, scale:f, dq:T, dk:T, dv:T) -> void',
});

/** Options of flashAttention. */
export interface FlashAttentionOptions {
  /**
   * Mask keys after each query (default false). Aligned to the end: with L queries and S keys,
   * query i sits at position S - L + i and sees keys 0..S-L+i (needs L <= S).
   */
  causal?: boolean;
  /** Multiplies the scores q k^T (default 1 / sqrt(D)). */
  scale?: number;
}

const OP = 'flashAttention';

function checkArgs(q: Tensor, k: Tensor, v: Tensor, causal: boolean, scale: number): void {
  for (const t of [q, k, v]) t._check(OP);
  const shapes = `q ${shapeStr(q.shape)}, k ${shapeStr(k.shape)} and v ${shapeStr(v.shape)}`;
  if (q.ndim !== 4 || k.ndim !== 4 || v.ndim !== 4) throw new ShapeError(OP, `expects q, k and v of shape [B, H, T, D], got ${shapes}`);
  const [B, H, L, D] = q.shape;
  const S = k.shape[2];
  if (k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D || v.shape.some((n, i) => n !== k.shape[i])) {
    throw new ShapeError(OP, `${shapes} do not fit: expected q [B, H, L, D] and k, v [B, H, S, D]`);
  }
  if (causal && L > S) throw new ShapeError(OP, `causal attention needs at most as many queries as keys, got ${shapes}`);
  if (S === 0 && L > 0) throw new ShapeError(OP, `needs at least one key, got ${shapes}`);
  if (q.dtype !== k.dtype || q.dtype !== v.dtype) {
    throw new DTypeError(OP, `q, k and v must share a dtype, got ${q.dtype}, ${k.dtype} and ${v.dtype}`);
  }
  if (!isFloating(q.dtype)) throw new DTypeError(OP, `expects floating point inputs, got ${q.dtype}`);
  if (q._dev !== k._dev || q._dev !== v._dev) {
    throw new DeviceError(OP, `q, k and v must be on one device, got ${q.device}, ${k.device} and ${v.device}`);
  }
  if (!Number.isFinite(scale)) throw new ValueError(OP, `scale must be a finite number, got ${scale}`);
}

const flashDef = defineOp<[q: Tensor, k: Tensor, v: Tensor, causal: boolean, scale: number]>({
  name: OP,
  inputs: [0, 1, 2],
  kernels: ['attentionForward', 'attentionBackward'],
  autocast: 'lowPrecision',
  check: checkArgs,
  forward(q, k, v, causal, scale) {
    const out = emptyTensor(q.shape, q.dtype, q._dev);
    const lse = emptyTensor(q.shape.slice(0, 3), q.dtype === 'float64' ? 'float64' : 'float32', q._dev);
    fillOutputs([out, lse], () => K.attentionForward(q._h, k._h, v._h, causal, scale, out._h, lse._h));
    const res = recordOp(OP, [q, k, v], out, [q, k, v, out, lse], (g, [qs, ks, vs, os, ls]) => {
      const dq = emptyTensor(qs.shape, qs.dtype, qs._dev);
      const dk = emptyTensor(ks.shape, ks.dtype, ks._dev);
      const dv = emptyTensor(vs.shape, vs.dtype, vs._dev);
      fillOutputs([dq, dk, dv], () =>
        K.attentionBackward(qs._h, ks._h, vs._h, os._h, g._h, ls._h, causal, scale, dq._h, dk._h, dv._h),
      );
      return [dq, dk, dv];
    });
    lse.dispose();
    return res;
  },
});

/**
 * softmax(q k^T * scale) v for q [B, H, L, D] and k, v [B, H, S, D], fused: the keys are walked in
 * tiles with an online softmax, so memory grows with L + S, not L x S, and the backward recomputes
 * the probabilities from a saved per-row log-sum-exp. Differentiable in q, k and v. Only where
 * flashAttentionApplies (float32 / float64 on the CPU; float32 / bfloat16 with head dims up to 128 on CUDA); nn.scaledDotProductAttention picks
 * it or the unfused path by itself.
 */
export function flashAttention(q: Tensor, k: Tensor, v: Tensor, opts: FlashAttentionOptions = {}): Tensor {
  return flashDef(q, k, v, opts.causal ?? false, opts.scale ?? 1 / Math.sqrt(q.shape[q.ndim - 1]));
}

// The largest head dim the CUDA kernels take (kAttentionCudaMaxHeadDim in native/ops/attention.h).
const CUDA_MAX_HEAD_DIM = nativeExports.attentionCudaMaxHeadDim as number;

/**
 * @internal Whether flashAttention has a kernel for q's device and head dim (half dtypes compute in
 * float32 where it lacks them).
 */
export function flashAttentionApplies(q: Tensor): boolean {
  if (q._dev !== -1 && q.shape[q.ndim - 1] > CUDA_MAX_HEAD_DIM) return false;
  return isFloating(q.dtype) && kernelDTypes('attentionForward', q._dev).includes('float32');
}
