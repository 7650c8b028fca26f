// Reductions along any dims with keepdim: sum, mean, max/min (values), argmax/argmin, var/std,
// logsumexp, all/any, and sumToShape (the backward of broadcasting). Each is one native pass over
// the input (native/ops/reduce.h) through defineOp: sum, mean, var/std and logsumexp compute in
// float32 under autocast (torch.autocast's list, and the rule for reductions); backward
// rules sit next to the forwards.
import { recordOp } from '../autograd/engine';
import { DType, isFloating } from '../dtype';
import { DTypeError, IndexError, ShapeError, ValueError } from '../errors';
import { normalizeDims, sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { to } from './creation';
import { AutocastCategory, bindKernels, defineOp, fillOutputs, opCodes, withDType } from './dispatch';
import { div, eq, exp, mul, sub } from './elementwise';
import { expand, reshape } from './shape';

const K = bindKernels('reduce', { reduce: '(op:e, x:T, out:T, dims:s, param:f) -> void' });

const OPS = ['sum', 'mean', 'max', 'min', 'argmax', 'argmin', 'all', 'any', 'var', 'std', 'logsumexp'] as const;
const R = opCodes('reduceOps', OPS);

/**
 * The dims a reduction runs over: one dim or a list (negative dims count from the end); omitted or []
 * means all dims.
 */
export type DimArg = number | readonly number[];

/** The reduced dims, sorted (undefined or an empty list: all of them, like PyTorch). */
function reducedDims(op: string, x: Tensor, dim: DimArg | undefined): number[] {
  x._check(op);
  const d = dim === undefined || (typeof dim !== 'number' && dim.length === 0) ? undefined : dim;
  // A 0-d tensor accepts dim 0 and -1 (normalizeDims allows them) but has nothing to reduce over.
  return normalizeDims(op, d, x.ndim).filter((i) => i < x.ndim);
}

/** x's shape with the reduced dims set to 1. */
function keptShape(x: Tensor, dims: readonly number[]): number[] {
  return x.shape.map((s, i) => (dims.includes(i) ? 1 : s));
}

function resultShape(x: Tensor, dims: readonly number[], keepdim: boolean): number[] {
  return keepdim ? keptShape(x, dims) : x.shape.filter((_, i) => !dims.includes(i));
}

function count(x: Tensor, dims: readonly number[]): number {
  return dims.reduce((n, d) => n * x.shape[d], 1);
}

/** One native reduction into a fresh tensor of `shape` (same elements as the kept dims). */
function reduceInto(op: (typeof OPS)[number], x: Tensor, dims: number[], shape: readonly number[], dtype: DType, param = 0): Tensor {
  const out = emptyTensor(shape, dtype, x._dev);
  fillOutputs([out], () => K.reduce(R[op], x._h, out._h, dims, param));
  return out;
}

/**
 * A reduction of x (argument 0) through defineOp: check validates the arguments (on the tensor the
 * op computes with), forward runs the native pass and records the backward.
 */
function reduction<A extends [Tensor, ...unknown[]]>(
  name: string, autocast: AutocastCategory, check: (...args: A) => void, forward: (...args: A) => Tensor,
): (...args: A) => Tensor {
  return defineOp<A>({ name, inputs: [0], kernels: ['reduce'], autocast, check, forward });
}

/** The gradient of a reduction's result broadcast back over the input's shape (a view). */
function spread(g: Tensor, kept: readonly number[], shape: readonly number[]): Tensor {
  const k = reshape(g, kept);
  const e = expand(k, shape);
  if (k !== g && k !== e) k.dispose();
  return e;
}

function requireFloat(op: string, x: Tensor): void {
  if (!isFloating(x.dtype)) throw new DTypeError(op, `expects a floating point tensor, got ${x.dtype}`);
}

type ReduceArgs = [x: Tensor, dim: DimArg | undefined, keepdim: boolean];

const sumOp = reduction<ReduceArgs>('sum', 'float32', (x, dim) => void reducedDims('sum', x, dim), (x, dim, keepdim) => {
  const dims = reducedDims('sum', x, dim);
  const float = isFloating(x.dtype);
  const out = reduceInto('sum', x, dims, resultShape(x, dims, keepdim), float ? x.dtype : 'int64');
  if (!float) return out;
  const kept = keptShape(x, dims), shape = x.shape;
  return recordOp('sum', [x], out, [], (g) => [spread(g, kept, shape)]);
});
/** Sum over dims (all by default). Integer and bool tensors sum to int64, like PyTorch. */
export function sum(x: Tensor, dim?: DimArg, keepdim = false): Tensor {
  return sumOp(x, dim, keepdim);
}

const meanOp = reduction<ReduceArgs>(
  'mean',
  'float32',
  (x, dim) => {
    reducedDims('mean', x, dim);
    requireFloat('mean', x);
  },
  (x, dim, keepdim) => {
    const dims = reducedDims('mean', x, dim);
    const out = reduceInto('mean', x, dims, resultShape(x, dims, keepdim), x.dtype);
    const kept = keptShape(x, dims), shape = x.shape, n = count(x, dims);
    return recordOp('mean', [x], out, [], (g) => [spread(mul(g, 1 / n), kept, shape)]);
  },
);
/**
 * Mean over dims (all by default) of a floating point tensor (integer tensors are a DTypeError, as in
 * PyTorch).
 */
export function mean(x: Tensor, dim?: DimArg, keepdim = false): Tensor {
  return meanOp(x, dim, keepdim);
}

function checkNonEmpty(op: string, x: Tensor, dims: readonly number[]): void {
  if (count(x, dims) === 0 && x.shape.every((s, i) => dims.includes(i) || s > 0)) {
    throw new IndexError(op, `cannot reduce over a zero-size dimension of a tensor of shape ${shapeStr(x.shape)}`);
  }
}

/** Largest (max) or smallest (min) values over dims; tied elements share the gradient evenly (like torch.amax). */
function extremum(op: 'max' | 'min'): (...args: ReduceArgs) => Tensor {
  return reduction<ReduceArgs>(op, 'none', (x, dim) => checkNonEmpty(op, x, reducedDims(op, x, dim)), (x, dim, keepdim) => {
    const dims = reducedDims(op, x, dim);
    const out = reduceInto(op, x, dims, resultShape(x, dims, keepdim), x.dtype);
    if (!isFloating(x.dtype)) return out;
    const kept = keptShape(x, dims);
    return recordOp(op, [x], out, [x, out], (g, [x0, y]) => {
      const hit = eq(x0, reshape(y, kept));
      const w = to(hit, x0.dtype, x0.device);
      return [mul(w, div(reshape(g, kept), sum(w, dims, true)))];
    });
  });
}
const maxOp = extremum('max');
const minOp = extremum('min');
/**
 * Largest values over dims (all by default), like torch.amax: values only (argmax gives indices). Tied
 * elements share the gradient evenly; reducing an empty dim is an IndexError.
 */
export function max(x: Tensor, dim?: DimArg, keepdim = false): Tensor {
  return maxOp(x, dim, keepdim);
}
/**
 * Smallest values over dims (all by default), like torch.amin: values only (argmin gives indices). Tied
 * elements share the gradient evenly.
 */
export function min(x: Tensor, dim?: DimArg, keepdim = false): Tensor {
  return minOp(x, dim, keepdim);
}

/** The index of the first largest (smallest) element along dim, or in the flattened tensor; int64. */
function argExtremum(op: 'argmax' | 'argmin'): (x: Tensor, dim: number | undefined, keepdim: boolean) => Tensor {
  return reduction<[x: Tensor, dim: number | undefined, keepdim: boolean]>(
    op,
    'none',
    (x, dim) => {
      if (dim !== undefined && typeof dim !== 'number') throw new IndexError(op, `dim must be a single dimension, got ${JSON.stringify(dim)}`);
      checkNonEmpty(op, x, reducedDims(op, x, dim));
    },
    (x, dim, keepdim) => {
      const dims = reducedDims(op, x, dim);
      return reduceInto(op, x, dims, resultShape(x, dims, keepdim), 'int64');
    },
  );
}
const argmaxOp = argExtremum('argmax');
const argminOp = argExtremum('argmin');
/**
 * The int64 index of the first largest element along dim, or in the flattened tensor when dim is
 * omitted.
 */
export function argmax(x: Tensor, dim?: number, keepdim = false): Tensor {
  return argmaxOp(x, dim, keepdim);
}
/**
 * The int64 index of the first smallest element along dim, or in the flattened tensor when dim is
 * omitted.
 */
export function argmin(x: Tensor, dim?: number, keepdim = false): Tensor {
  return argminOp(x, dim, keepdim);
}

/** Options of variance() and std(). */
export interface VarianceOptions {
  /** Subtracted from the element count in the divisor: 1 (default) is Bessel's correction, 0 the population variance. */
  correction?: number;
  /** Keep the reduced dims with size 1 (default false). */
  keepdim?: boolean;
}

/** var or std in one pass; the gradient of var is 2 (x - mean) / (n - correction). */
function spreadOp(op: 'var' | 'std'): (x: Tensor, dim: DimArg | undefined, opts: VarianceOptions) => Tensor {
  return reduction<[x: Tensor, dim: DimArg | undefined, opts: VarianceOptions]>(
    op,
    'float32',
    (x, dim, opts) => {
      reducedDims(op, x, dim);
      requireFloat(op, x);
      const c = opts.correction ?? 1;
      if (typeof c !== 'number' || !Number.isFinite(c)) throw new ValueError(op, `correction must be a finite number, got ${c}`);
    },
    (x, dim, opts) => {
      const dims = reducedDims(op, x, dim);
      const c = opts.correction ?? 1;
      const out = reduceInto(op, x, dims, resultShape(x, dims, opts.keepdim ?? false), x.dtype, c);
      const kept = keptShape(x, dims), n = count(x, dims);
      return recordOp(op, [x], out, [x, out], (g, [x0, y]) => {
        const centered = sub(x0, mean(x0, dims, true));
        const gk = reshape(g, kept);
        // d std = d var / (2 std)
        return [mul(op === 'var' ? mul(gk, 2 / (n - c)) : div(gk, mul(reshape(y, kept), n - c)), centered)];
      });
    },
  );
}
const varOp = spreadOp('var');
const stdOp = spreadOp('std');
/** Variance with Bessel's correction by default (correction = 1, like torch.var). */
export function variance(x: Tensor, dim?: DimArg, opts: VarianceOptions = {}): Tensor {
  return varOp(x, dim, opts);
}
/**
 * Standard deviation over dims (all by default): the square root of variance(), with the same
 * correction (1 by default, like torch.std).
 */
export function std(x: Tensor, dim?: DimArg, opts: VarianceOptions = {}): Tensor {
  return stdOp(x, dim, opts);
}

const logsumexpOp = reduction<[x: Tensor, dim: DimArg, keepdim: boolean]>(
  'logsumexp',
  'float32',
  (x, dim) => void reducedDims('logsumexp', x, dim),
  (x, dim, keepdim) => {
    const dims = reducedDims('logsumexp', x, dim);
    const out = reduceInto('logsumexp', x, dims, resultShape(x, dims, keepdim), x.dtype);
    const kept = keptShape(x, dims);
    return recordOp('logsumexp', [x], out, [x, out], (g, [x0, y]) => [mul(reshape(g, kept), exp(sub(x0, reshape(y, kept))))]);
  },
);
/** log(sum(exp(x))) over dims, computed stably (integer inputs give float32). */
export function logsumexp(x: Tensor, dim: DimArg, keepdim = false): Tensor {
  x._check('logsumexp');
  return withDType(isFloating(x.dtype) ? x.dtype : 'float32', [x], ([xf]) => logsumexpOp(xf, dim, keepdim));
}

/** Whether every element (all) or some element (any) over dims is non-zero; bool. */
function logical(op: 'all' | 'any'): (...args: ReduceArgs) => Tensor {
  return reduction<ReduceArgs>(op, 'none', (x, dim) => void reducedDims(op, x, dim), (x, dim, keepdim) => {
    const dims = reducedDims(op, x, dim);
    return reduceInto(op, x, dims, resultShape(x, dims, keepdim), 'bool');
  });
}
const allOp = logical('all');
const anyOp = logical('any');
/** Whether every element over dims (all by default) is non-zero, as a bool tensor (like torch.all). */
export function all(x: Tensor, dim?: DimArg, keepdim = false): Tensor {
  return allOp(x, dim, keepdim);
}
/** Whether some element over dims (all by default) is non-zero, as a bool tensor (like torch.any). */
export function any(x: Tensor, dim?: DimArg, keepdim = false): Tensor {
  return anyOp(x, dim, keepdim);
}

const sumToShapeOp = reduction<[x: Tensor, shape: readonly number[]]>(
  'sumToShape',
  'none',
  (x, shape) => void broadcastDims(x, shape),
  (x, shape) => {
    const float = isFloating(x.dtype);
    const out = reduceInto('sum', x, broadcastDims(x, shape), shape, float ? x.dtype : 'int64');
    if (!float) return out;
    const from = x.shape;
    return recordOp('sumToShape', [x], out, [], (g) => [expand(g, from)]);
  },
);

/** The dims of x that broadcasting to x's shape added to `shape` or stretched from 1. */
function broadcastDims(x: Tensor, shape: readonly number[]): number[] {
  const lead = x.ndim - shape.length;
  const bad = () => new ShapeError('sumToShape', `shape ${shapeStr(x.shape)} is not a broadcast of ${shapeStr(shape)}`);
  if (lead < 0) throw bad();
  const dims: number[] = [];
  for (let i = 0; i < x.ndim; i++) {
    if (i < lead || (shape[i - lead] === 1 && x.shape[i] !== 1)) dims.push(i);
    else if (shape[i - lead] !== x.shape[i]) throw bad();
  }
  return dims;
}

/** Sums a broadcast gradient back down to shape (the backward of broadcasting). */
export function sumToShape(x: Tensor, shape: readonly number[]): Tensor {
  x._check('sumToShape');
  if (sameShape(x.shape, shape)) return x;
  return sumToShapeOp(x, shape);
}
