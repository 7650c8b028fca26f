// Softmax, log-softmax and cross-entropy fused with log-softmax. Each forward is one native call
// and each backward one fused native kernel, recorded next to its forward.
import { recordOp } from '../autograd/engine';
import { isFloating, isIntegral } from '../dtype';
import { DTypeError, DeviceError, ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { NativeHandle, native } from '../native';
import { normalizeDim, sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';

interface SoftmaxNative {
  softmaxForward(x: NativeHandle, dim: number, log: boolean, y: NativeHandle): void;
  softmaxBackward(y: NativeHandle, gy: NativeHandle, dim: number, log: boolean, gx: NativeHandle): void;
  crossEntropyForward(
    logits: NativeHandle, target: NativeHandle, ignoreIndex: number, labelSmoothing: number, reduction: number,
    loss: NativeHandle, lse: NativeHandle, totalWeight: NativeHandle,
  ): void;
  crossEntropyBackward(
    logits: NativeHandle, target: NativeHandle, lse: NativeHandle, totalWeight: NativeHandle, gradLoss: NativeHandle,
    ignoreIndex: number, labelSmoothing: number, reduction: number, gradLogits: NativeHandle,
  ): void;
}
const N = native as unknown as SoftmaxNative;

/** @internal Throws DTypeError unless x is floating point (the softmax and norm families compute in float). */
export function checkFloating(op: string, x: Tensor, what = 'input'): void {
  if (!isFloating(x.dtype)) {
    throw new DTypeError(op, `${what} must be floating point, got ${x.dtype} of shape ${shapeStr(x.shape)}`);
  }
}

/**
 * @internal The CPU kernels of the softmax and norm families take float32 and float64: for a
 * bfloat16 / float16 input x on the CPU this runs f on float32 copies of the given tensors and casts
 * the result back (gradients flow through both casts); otherwise it returns null.
 */
export function halfOnCpuViaFloat32(x: Tensor, tensors: Array<Tensor | null | undefined>, f: (...ts: Array<Tensor | null>) => Tensor): Tensor | null {
  if (x.device !== 'cpu' || (x.dtype !== 'bfloat16' && x.dtype !== 'float16')) return null;
  return tidy(() => f(...tensors.map((t) => (t && t.dtype === x.dtype ? t.to('float32') : t ?? null))).to(x.dtype));
}

/** @internal Runs a native call that fills freshly allocated outputs; disposes them if it throws. */
export function fillOutputs(outputs: Tensor[], call: () => void): void {
  try {
    call();
  } catch (e) {
    for (const t of outputs) t.dispose();
    throw e;
  }
}

function softmaxOp(op: 'softmax' | 'logSoftmax', x: Tensor, dim: number): Tensor {
  x._check(op);
  checkFloating(op, x);
  const d = normalizeDim(op, dim, x.ndim);
  const viaFloat = halfOnCpuViaFloat32(x, [x], (xf) => softmaxOp(op, xf!, d));
  if (viaFloat) return viaFloat;
  const log = op === 'logSoftmax';
  const y = emptyTensor(x.shape, x.dtype, x._dev);
  fillOutputs([y], () => N.softmaxForward(x._h, d, log, y._h));
  return recordOp(op, [x], y, [y], (g, [ys]) => {
    const gx = emptyTensor(ys.shape, ys.dtype, ys._dev);
    N.softmaxBackward(ys._h, g._h, d, log, gx._h);
    return [gx];
  });
}

/** exp(x) / sum(exp(x)) along dim, computed stably (the row maximum is subtracted first). */
export function softmax(x: Tensor, dim = -1): Tensor {
  return softmaxOp('softmax', x, dim);
}

/** x - logsumexp(x) along dim: log(softmax(x)) without its underflow. */
export function logSoftmax(x: Tensor, dim = -1): Tensor {
  return softmaxOp('logSoftmax', x, dim);
}

/** Options of crossEntropy (and nn.crossEntropy / nn.CrossEntropyLoss). */
export interface CrossEntropyOptions {
  /** Targets equal to this contribute no loss and no gradient (default -100). */
  ignoreIndex?: number;
  /** ε in [0, 1]: the target distribution is (1 - ε) * onehot + ε / C (default 0). */
  labelSmoothing?: number;
  /** 'mean' (default) divides the summed loss by the number of non-ignored targets. */
  reduction?: 'mean' | 'sum' | 'none';
}

const REDUCTION = { none: 0, sum: 1, mean: 2 } as const;

/**
 * Cross-entropy between logits and class-index targets, like torch.nn.functional.cross_entropy:
 * logits [N, C] with target [N], logits [N, C, d1, ...] with target [N, d1, ...] (classes along
 * dim 1), or logits [C] with a 0-d target. Log-softmax is fused in: no log-probabilities are
 * materialized. Targets must be int32 or int64 and lie in [0, C) unless equal to ignoreIndex
 * (IndexError otherwise). Gradients flow to logits only.
 */
export function crossEntropy(logits: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const op = 'crossEntropy';
  logits._check(op);
  target._check(op);
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const eps = opts.labelSmoothing ?? 0;
  const reduction = opts.reduction ?? 'mean';
  if (!Number.isSafeInteger(ignoreIndex)) throw new ValueError(op, `ignoreIndex must be an integer, got ${ignoreIndex}`);
  if (typeof eps !== 'number' || !(eps >= 0 && eps <= 1)) {
    throw new ValueError(op, `labelSmoothing must be a number in [0, 1], got ${eps}`);
  }
  if (!Object.prototype.hasOwnProperty.call(REDUCTION, reduction)) {
    throw new ValueError(op, `reduction must be 'mean', 'sum' or 'none', got ${JSON.stringify(reduction)}`);
  }
  checkFloating(op, logits, 'logits');
  if (!isIntegral(target.dtype)) {
    throw new DTypeError(op, `target must hold class indices as int32 or int64, got ${target.dtype} of shape ${shapeStr(target.shape)}`);
  }
  if (logits.ndim === 0) throw new ShapeError(op, 'logits must have at least 1 dimension (classes), got a scalar');
  if (logits._dev !== target._dev) {
    throw new DeviceError(op, `logits are on ${logits.device} but target is on ${target.device}`);
  }
  const cdim = logits.ndim === 1 ? 0 : 1;
  const rows = logits.shape.filter((_, i) => i !== cdim);
  if (!sameShape(target.shape, rows)) {
    throw new ShapeError(
      op,
      `target shape ${shapeStr(target.shape)} does not match logits shape ${shapeStr(logits.shape)}: expected ${shapeStr(rows)} (classes along dim ${cdim})`,
    );
  }
  const viaFloat = halfOnCpuViaFloat32(logits, [logits], (lf) => crossEntropy(lf!, target, opts));
  if (viaFloat) return viaFloat;
  const code = REDUCTION[reduction];
  const loss = emptyTensor(reduction === 'none' ? rows : [], logits.dtype, logits._dev);
  const lse = emptyTensor(rows, logits.dtype, logits._dev);
  const totalWeight = emptyTensor([], logits.dtype, logits._dev);
  fillOutputs([loss, lse, totalWeight], () =>
    N.crossEntropyForward(logits._h, target._h, ignoreIndex, eps, code, loss._h, lse._h, totalWeight._h),
  );
  const out = recordOp(op, [logits, target], loss, [logits, target, lse, totalWeight], (g, [x, t, l, w]) => {
    const gx = emptyTensor(x.shape, x.dtype, x._dev);
    N.crossEntropyBackward(x._h, t._h, l._h, w._h, g._h, ignoreIndex, eps, code, gx._h);
    return [gx, null];
  });
  lse.dispose();
  totalWeight.dispose();
  return out;
}
