// Reductions along any dims with keepdim: sum, mean, max/min (values), argmax/argmin, var/std,
// logsumexp, all/any, and sumToShape (the backward of broadcasting). Each is one native pass over
// the input (lib/../native/cpu/reduce.cc); backward rules sit next to the forwards.
import { recordOp } from '../autograd/engine';
import { DType, isFloating } from '../dtype';
import { DTypeError, IndexError, ShapeError } from '../errors';
import { NativeHandle, native } from '../native';
import { normalizeDims, sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { mul } from './elementwise';
import { expand, reshape } from './shape';

interface ReduceNative {
  reduceOps: Record<string, number>;
  reduce(op: number, x: NativeHandle, out: NativeHandle, dims: number[], param: number): void;
}
const N = native as unknown as ReduceNative;

const OPS = ['sum', 'mean', 'max', 'min', 'argmax', 'argmin', 'all', 'any', 'var', 'std', 'logsumexp'] as const;
const R = Object.fromEntries(
  OPS.map((name) => {
    const code = N.reduceOps[name];
    if (code === undefined) throw new Error(`kiln: the native addon lacks reduce op '${name}'; rebuild it`);
    return [name, code];
  }),
) as Record<(typeof OPS)[number], number>;

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
  try {
    N.reduce(R[op], x._h, out._h, dims, param);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
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

/** Sum over dims (all by default). Integer and bool tensors sum to int64, like PyTorch. */
export function sum(x: Tensor, dim?: DimArg, keepdim = false): Tensor {
  const dims = reducedDims('sum', x, dim);
  const float = isFloating(x.dtype);
  const out = reduceInto('sum', x, dims, resultShape(x, dims, keepdim), float ? x.dtype : 'int64');
  if (!float) return out;
  const kept = keptShape(x, dims), shape = x.shape;
  return recordOp('sum', [x], out, [], (g) => [spread(g, kept, shape)]);
}

export function mean(x: Tensor, dim?: DimArg, keepdim = false): Tensor {
  const dims = reducedDims('mean', x, dim);
  requireFloat('mean', x);
  const out = reduceInto('mean', x, dims, resultShape(x, dims, keepdim), x.dtype);
  const kept = keptShape(x, dims), shape = x.shape, n = count(x, dims);
  return recordOp('mean', [x], out, [], (g) => [spread(mul(g, 1 / n), kept, shape)]);
}

export function max(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('max'); }
export function min(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('min'); }
export function argmax(x: Tensor, dim?: number, keepdim = false): Tensor { return todo('argmax'); }
export function argmin(x: Tensor, dim?: number, keepdim = false): Tensor { return todo('argmin'); }
export function variance(x: Tensor, dim?: DimArg, opts: { correction?: number; keepdim?: boolean } = {}): Tensor { return todo('var'); }
export function std(x: Tensor, dim?: DimArg, opts: { correction?: number; keepdim?: boolean } = {}): Tensor { return todo('std'); }
export function logsumexp(x: Tensor, dim: DimArg, keepdim = false): Tensor { return todo('logsumexp'); }
export function all(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('all'); }
export function any(x: Tensor, dim?: DimArg, keepdim = false): Tensor { return todo('any'); }
function todo(op: string): never {
  throw new Error(`${op}: not implemented yet`);
}

/** Sums a broadcast gradient back down to shape (the backward of broadcasting). */
export function sumToShape(x: Tensor, shape: readonly number[]): Tensor {
  x._check('sumToShape');
  if (sameShape(x.shape, shape)) return x;
  const lead = x.ndim - shape.length;
  const bad = () => new ShapeError('sumToShape', `shape ${shapeStr(x.shape)} is not a broadcast of ${shapeStr(shape)}`);
  if (lead < 0) throw bad();
  const dims: number[] = [];
  for (let i = 0; i < x.ndim; i++) {
    if (i < lead || (shape[i - lead] === 1 && x.shape[i] !== 1)) dims.push(i);
    else if (shape[i - lead] !== x.shape[i]) throw bad();
  }
  const float = isFloating(x.dtype);
  const out = reduceInto('sum', x, dims, shape, float ? x.dtype : 'int64');
  if (!float) return out;
  const from = x.shape;
  return recordOp('sumToShape', [x], out, [], (g) => [expand(g, from)]);
}
