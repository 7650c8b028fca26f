// Gradient norms and clipping by the global norm (PyTorch's clip_grad_norm_), in pieces a sharded or
// data-parallel run can put a collective between: gradNormPartial (sum |g|^p over the gradients, a
// value shards add up), scaleGrads_ (every gradient times a scale, read on the device) and
// clipGradNorm built from them, whose reducePartial hook is where the shards' partials meet. Nothing
// here waits for the device unless errorIfNonfinite asks for the norm.
import { DType } from '../dtype';
import { deviceCode } from '../device';
import { DTypeError, ValueError } from '../errors';
import { keep } from '../memory';
import { contiguousCopy, full } from '../ops/creation';
import { clipCoefficient, gradNormPartial as nativePartial, scaleGrads } from '../ops/optim';
import { Tensor } from '../tensor';

/** Options of clipGradNorm. */
export interface ClipGradNormOptions {
  /** Throw a ValueError (before touching the gradients) when the total norm is NaN or infinite (reads the norm: the host waits). */
  errorIfNonfinite?: boolean;
  /**
   * Combines, in place, this process's partial (a 0-d float64 tensor on the gradients' device: sum
   * |g|^p, or max |g| for normType Infinity) with the other shards' before the norm is taken: an
   * all-reduce by sum (by max for Infinity) over the process group when each process holds part of the
   * gradients (sharded optimizer state, tensor parallelism). Every process must call clipGradNorm, even
   * one without gradients, so that the collective meets.
   */
  reducePartial?: (partial: Tensor) => void;
}

function paramList(params: Tensor | Iterable<Tensor>): Tensor[] {
  return params instanceof Tensor ? [params] : [...params];
}

function checkNormType(op: string, normType: number): void {
  if (typeof normType !== 'number' || Number.isNaN(normType) || normType <= 0) throw new ValueError(op, `normType must be a number > 0 (or Infinity), got ${String(normType)}`);
}

/** The device code of params' gradients (the first parameter's device when none has one). */
function gradDevice(list: readonly Tensor[]): number {
  const first = list.find((p) => p.grad) ?? list[0];
  return first ? (first.grad ?? first)._dev : deviceCode('clipGradNorm', 'cpu');
}

/** The norms' dtype: float64 for float64 gradients, else float32. */
function normDType(list: readonly Tensor[]): DType {
  return list.find((p) => p.grad)?.grad!.dtype === 'float64' ? 'float64' : 'float32';
}

/**
 * The gradients of list, each made contiguous in place (a strided .grad is replaced by a contiguous
 * copy: the kernels read and write dense memory). Parameters without a gradient are skipped.
 */
function denseGrads(op: string, list: readonly Tensor[]): Tensor[] {
  const grads: Tensor[] = [];
  for (const p of list) {
    const g = p.grad;
    if (!g) continue;
    g._check(op);
    if (!g.isContiguous()) {
      p.grad = keep(contiguousCopy(g));
      g.dispose();
    }
    grads.push(p.grad!);
  }
  return grads;
}

/**
 * The reducible part of the global gradient norm of params, as a 0-d tensor on the gradients' device
 * (float32; float64 for float64 gradients), without waiting for the device: the sum over every
 * gradient element of |g|^normType (for the default normType 2, the SQUARED norm), or max |g| for
 * normType Infinity. Partials of disjoint sets of gradients combine by sum (by max for Infinity), so
 * shards holding parts of the gradients all-reduce their partials and take the norm from the result,
 * partial ** (1 / normType) (sqrt for 2). Parameters without a gradient count for nothing.
 */
export function gradNormPartial(params: Tensor | Iterable<Tensor>, normType = 2): Tensor {
  const op = 'gradNormPartial';
  checkNormType(op, normType);
  const list = paramList(params);
  const grads = list.flatMap((p) => (p.grad ? [p.grad] : []));
  for (const g of grads) g._check(op);
  // A strided gradient is read through a dense copy; the gradients themselves stay as they are.
  const dense = grads.map((g) => (g.isContiguous() ? g : contiguousCopy(g)));
  try {
    return nativePartial(dense, normType, normDType(list), gradDevice(list));
  } finally {
    dense.forEach((d, i) => d !== grads[i] && d.dispose());
  }
}

/**
 * Multiplies the gradient of every parameter in params by scale in place, a number or a one-element
 * float32/float64 tensor on the gradients' device read there (so a scale computed on the device, such
 * as a clipping coefficient, needs no host round trip). Parameters without a gradient are skipped; a
 * strided gradient is replaced by a contiguous copy.
 */
export function scaleGrads_(params: Tensor | Iterable<Tensor>, scale: number | Tensor): void {
  const op = 'scaleGrads_';
  const list = paramList(params);
  if (scale instanceof Tensor) {
    scale._check(op);
    if (scale.dtype !== 'float32' && scale.dtype !== 'float64') throw new DTypeError(op, `scale must be float32 or float64, got ${scale.dtype}`);
  } else if (typeof scale !== 'number') {
    throw new ValueError(op, `scale must be a number or a tensor, got ${String(scale)}`);
  }
  const grads = denseGrads(op, list);
  if (grads.length === 0) return;
  const s = scale instanceof Tensor ? scale : full([], scale, { dtype: 'float64', device: grads[0].device });
  try {
    scaleGrads(grads, s);
  } finally {
    if (s !== scale) s.dispose();
  }
}

/**
 * Scales the gradients of params in place so that their norm, taken over all of them together as one
 * vector, is at most maxNorm (scale maxNorm / (norm + 1e-6), only when the norm is larger).
 * normType is p of the p-norm (2 by default, Infinity for the largest absolute value).
 * Returns the total norm before clipping, as a scalar tensor (float32; float64 for float64
 * gradients) on the gradients' device; read it with .item() (which waits for the device). Parameters
 * without a gradient are skipped; a strided gradient is replaced by a contiguous copy.
 *
 * Built from gradNormPartial's float64 partial, opts.reducePartial (where shards combine their
 * partials), the clip coefficient computed on the device and scaleGrads_: the host never waits
 * unless errorIfNonfinite asks it to read the norm.
 */
export function clipGradNorm(params: Tensor | Iterable<Tensor>, maxNorm: number, normType = 2, opts: ClipGradNormOptions = {}): Tensor {
  const op = 'clipGradNorm';
  if (typeof maxNorm !== 'number' || Number.isNaN(maxNorm) || maxNorm < 0) throw new ValueError(op, `maxNorm must be a number >= 0, got ${String(maxNorm)}`);
  checkNormType(op, normType);
  const list = paramList(params);
  const grads = denseGrads(op, list);
  const partial = nativePartial(grads, normType, 'float64', gradDevice(list));
  let coef: Tensor | null = null;
  try {
    opts.reducePartial?.(partial);
    if (opts.errorIfNonfinite) {
      const v = partial.item();
      if (!Number.isFinite(v)) {
        throw new ValueError(op, `the total norm of order ${normType} of the gradients is ${v} (not finite); pass errorIfNonfinite: false to clip anyway`);
      }
    }
    const r = clipCoefficient(partial, normType, maxNorm, normDType(list));
    coef = r.coef;
    try {
      scaleGrads(grads, coef);
    } catch (e) {
      r.norm.dispose();
      throw e;
    }
    return r.norm;
  } finally {
    partial.dispose();
    coef?.dispose();
  }
}
