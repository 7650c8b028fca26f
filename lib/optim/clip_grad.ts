// Gradient clipping by the global norm of all gradients (PyTorch's clip_grad_norm_), one native call
// over every gradient: the norm in float64 over fixed blocks, then the in-place scaling.
import { ValueError } from '../errors';
import { keep } from '../memory';
import { contiguousCopy, zeros } from '../ops/creation';
import { Tensor, emptyTensor } from '../tensor';
import { optimNative } from './optimizer';

/** Options of clipGradNorm. */
export interface ClipGradNormOptions {
  /** Throw a ValueError (before touching the gradients) when the total norm is NaN or infinite. */
  errorIfNonfinite?: boolean;
}

/**
 * Scales the gradients of params in place so that their norm, taken over all of them together as one
 * vector, is at most maxNorm (scale maxNorm / (norm + 1e-6), only when the norm is larger).
 * normType is p of the p-norm (2 by default, Infinity for the largest absolute value).
 * Returns the total norm before clipping, as a scalar tensor in the first gradient's dtype; read it
 * with .item() (which waits for the device). Parameters without a gradient are skipped.
 */
export function clipGradNorm(params: Tensor | Iterable<Tensor>, maxNorm: number, normType = 2, opts: ClipGradNormOptions = {}): Tensor {
  const op = 'clipGradNorm';
  if (typeof maxNorm !== 'number' || Number.isNaN(maxNorm) || maxNorm < 0) throw new ValueError(op, `maxNorm must be a number >= 0, got ${String(maxNorm)}`);
  if (typeof normType !== 'number' || Number.isNaN(normType) || normType <= 0) throw new ValueError(op, `normType must be a number > 0 (or Infinity), got ${String(normType)}`);
  const list = params instanceof Tensor ? [params] : [...params];
  const withGrad = list.filter((p) => p.grad !== null);
  if (withGrad.length === 0) return zeros([], { device: list[0]?.device ?? 'cpu' });
  // The kernel reads and scales contiguous memory: a strided gradient is replaced by a contiguous copy.
  for (const p of withGrad) {
    const g = p.grad!;
    g._check(op);
    if (!g.isContiguous()) {
      p.grad = keep(contiguousCopy(g));
      g.dispose();
    }
  }
  const grads = withGrad.map((p) => p.grad!);
  const total = emptyTensor([], grads[0].dtype === 'float64' ? 'float64' : 'float32', grads[0]._dev);
  try {
    optimNative.clipGradNorm(grads.map((g) => g._h), maxNorm, normType, total._h, opts.errorIfNonfinite ?? false);
    for (const g of grads) g._bumpVersion();
  } catch (e) {
    total.dispose();
    throw e;
  }
  return total;
}
