// Softmax, log-softmax and cross-entropy fused with log-softmax (native/ops/softmax.h). Each forward
// is one native call and each backward one fused native kernel, recorded next to its forward; each op
// goes through defineOp, which computes in float32 where a backend has no half kernel (the CPU) and
// under autocast (where cross-entropy's CUDA kernels read half logits as they are).
import { autocastFor } from '../autocast';
import { recordOp } from '../autograd/engine';
import { isFloating, isIntegral } from '../dtype';
import { DTypeError, DeviceError, ShapeError, ValueError } from '../errors';
import { normalizeDim, sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { bindKernels, defineOp, fillOutputs, opCodes } from './dispatch';

const K = bindKernels('softmax', {
  softmaxForward: '(x:T, dim:i, log:b, y:T) -> void',
  softmaxBackward: '(y:T, gy:T, dim:i, log:b, gx:T) -> void',
  crossEntropyForward:
    '(logits:T, target:T, ignoreIndex:i, labelSmoothing:f, reduction:e, loss:T, lse:T, totalWeight:T) -> void',
  crossEntropyBackward:
    '(logits:T, target:T, lse:T, totalWeight:T, gradLoss:T, ignoreIndex:i, labelSmoothing:f, reduction:e, gradLogits:T) -> void',
});

const REDUCTION = opCodes('reductions', ['none', 'sum', 'mean'] as const);

/** @internal Throws DTypeError unless x is floating point (the softmax and norm families compute in float). */
export function checkFloating(op: string, x: Tensor, what = 'input'): void {
  if (!isFloating(x.dtype)) {
    throw new DTypeError(op, `${what} must be floating point, got ${x.dtype} of shape ${shapeStr(x.shape)}`);
  }
}

function softmaxOp(op: 'softmax' | 'logSoftmax'): (x: Tensor, dim: number) => Tensor {
  const log = op === 'logSoftmax';
  return defineOp<[x: Tensor, dim: number]>({
    name: op,
    inputs: [0],
    kernels: ['softmaxForward', 'softmaxBackward'],
    autocast: 'float32',
    check(x, dim) {
      x._check(op);
      checkFloating(op, x);
      normalizeDim(op, dim, x.ndim);
    },
    forward(x, dim) {
      const d = normalizeDim(op, dim, x.ndim);
      const y = emptyTensor(x.shape, x.dtype, x._dev);
      fillOutputs([y], () => K.softmaxForward(x._h, d, log, y._h));
      return recordOp(op, [x], y, [y], (g, [ys]) => {
        const gx = emptyTensor(ys.shape, ys.dtype, ys._dev);
        fillOutputs([gx], () => K.softmaxBackward(ys._h, g._h, d, log, gx._h));
        return [gx];
      });
    },
  });
}
const softmaxDef = softmaxOp('softmax');
const logSoftmaxDef = softmaxOp('logSoftmax');

/** exp(x) / sum(exp(x)) along dim, computed stably (the row maximum is subtracted first). */
export function softmax(x: Tensor, dim = -1): Tensor {
  return softmaxDef(x, dim);
}

/** x - logsumexp(x) along dim: log(softmax(x)) without its underflow. */
export function logSoftmax(x: Tensor, dim = -1): Tensor {
  return logSoftmaxDef(x, dim);
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

const crossEntropyDef = defineOp<[logits: Tensor, target: Tensor, opts: CrossEntropyOptions]>({
  name: 'crossEntropy',
  inputs: [0],
  kernels: ['crossEntropyForward', 'crossEntropyBackward'],
  autocast: 'float32',
  // The logits are the largest activation of a language model ([B, T, vocab]): under autocast the
  // CUDA kernels read them in bfloat16 and write a float32 loss, with no float32 copy of them.
  autocastKeepsHalf: true,
  check(logits, target, opts) {
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
  },
  forward(logits, target, opts) {
    const ignoreIndex = opts.ignoreIndex ?? -100;
    const eps = opts.labelSmoothing ?? 0;
    const reduction = opts.reduction ?? 'mean';
    const code = REDUCTION[reduction];
    const rows = logits.shape.filter((_, i) => i !== (logits.ndim === 1 ? 0 : 1));
    // Autocast's loss is float32; half logits reach here under autocast only where the kernels take them.
    const half = logits.dtype === 'bfloat16' || logits.dtype === 'float16';
    const resultDType = half && autocastFor(logits._dev) ? 'float32' : logits.dtype;
    const loss = emptyTensor(reduction === 'none' ? rows : [], resultDType, logits._dev);
    const lse = emptyTensor(rows, resultDType, logits._dev);
    const totalWeight = emptyTensor([], resultDType, logits._dev);
    fillOutputs([loss, lse, totalWeight], () =>
      K.crossEntropyForward(logits._h, target._h, ignoreIndex, eps, code, loss._h, lse._h, totalWeight._h),
    );
    const out = recordOp('crossEntropy', [logits, target], loss, [logits, target, lse, totalWeight], (g, [x, t, l, w]) => {
      const gx = emptyTensor(x.shape, x.dtype, x._dev);
      fillOutputs([gx], () => K.crossEntropyBackward(x._h, t._h, l._h, w._h, g._h, ignoreIndex, eps, code, gx._h));
      return [gx, null];
    });
    lse.dispose();
    totalWeight.dispose();
    return out;
  },
});

/**
 * Cross-entropy between logits and class-index targets, like torch.nn.functional.cross_entropy:
 * logits [N, C] with target [N], logits [N, C, d1, ...] with target [N, d1, ...] (classes along
 * dim 1), or logits [C] with a 0-d target. Log-softmax is fused in: no log-probabilities are
 * materialized. Targets must be int32 or int64 and lie in [0, C) unless equal to ignoreIndex
 * (IndexError otherwise). Gradients flow to logits only.
 */
export function crossEntropy(logits: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  return crossEntropyDef(logits, target, opts);
}
