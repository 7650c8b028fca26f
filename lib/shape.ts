// Shape arithmetic shared by the ops: numel, contiguous strides, broadcasting, dim normalization.
import { IndexError, ShapeError } from './errors';

export type Shape = readonly number[];

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const st = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = acc;
    acc *= Math.max(shape[i], 1);
  }
  return st;
}

export function shapeStr(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function sameShape(a: Shape, b: Shape): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** NumPy broadcasting of shapes; throws ShapeError naming op and the shapes. */
export function broadcastShapes(op: string, ...shapes: Shape[]): number[] {
  const nd = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(nd).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = nd - s.length + i;
      const d = s[i];
      if (d === out[o] || d === 1) continue;
      if (out[o] === 1) out[o] = d;
      else throw new ShapeError(op, `shapes ${shapes.map(shapeStr).join(' and ')} cannot be broadcast together`);
    }
  }
  checkNumel(op, out);
  return out;
}

/** Normalizes a possibly negative dim against ndim (insert=true allows dim == ndim, for unsqueeze/stack). */
export function normalizeDim(op: string, dim: number, ndim: number, insert = false): number {
  const n = insert ? ndim + 1 : ndim;
  if (!Number.isInteger(dim) || dim < -Math.max(n, 1) || dim >= Math.max(n, 1)) {
    throw new IndexError(op, `dim ${dim} out of range for a tensor of ${ndim} dimensions`);
  }
  return dim < 0 ? dim + Math.max(n, 1) : dim;
}

/** Normalizes `dim` (undefined = all dims) to a sorted list without duplicates. */
export function normalizeDims(op: string, dim: number | readonly number[] | undefined, ndim: number): number[] {
  if (dim === undefined) return Array.from({ length: ndim }, (_, i) => i);
  const dims = (typeof dim === 'number' ? [dim] : [...dim]).map((d) => normalizeDim(op, d, ndim));
  const sorted = [...new Set(dims)].sort((a, b) => a - b);
  if (sorted.length !== dims.length) throw new IndexError(op, `dim ${JSON.stringify(dim)} repeats a dimension`);
  return sorted;
}

export function checkShape(op: string, shape: readonly number[]): number[] {
  if (!Array.isArray(shape)) throw new ShapeError(op, `a shape must be an array of integers, got ${typeof shape}`);
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new ShapeError(op, `invalid shape ${shapeStr(shape)}`);
  }
  checkNumel(op, shape);
  return [...shape];
}

/**
 * The largest element count of a tensor (as in native/core/tensor.h): JavaScript numbers count
 * exactly up to here, and no byte count of such a tensor overflows 64 bits.
 */
export const MAX_NUMEL = Number.MAX_SAFE_INTEGER;

/**
 * Throws ShapeError when shape has more than MAX_NUMEL elements, counting a size-0 dimension as 1: the
 * contiguous strides of an empty tensor are such products too, and must stay exact.
 */
export function checkNumel(op: string, shape: readonly number[]): void {
  let n = 1;
  for (const d of shape) n *= Math.max(d, 1);
  if (n <= MAX_NUMEL) return;
  const exact = shape.reduce((a, d) => a * BigInt(Math.max(d, 1)), 1n);   // the double product is rounded
  throw new ShapeError(op, `shape ${shapeStr(shape)} spans ${exact} elements (size-0 dimensions counted as 1), more than 2^53 - 1`);
}
