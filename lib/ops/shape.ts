// Shape ops. Views share storage and cost no copy: reshape/view, permute, transpose, expand,
// squeeze/unsqueeze, flatten, narrow/slice/select, split/chunk. cat, stack, repeat and
// contiguous (of a non-contiguous tensor) copy. Each records its backward rule next to it.
import { recordOp } from '../autograd/engine';
import { DeviceError, IndexError, ShapeError, ValueError } from '../errors';
import { promoteTypes } from '../dtype';
import { native } from '../native';
import { checkNumel, checkShape, contiguousStrides, normalizeDim, numel, sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { contiguousCopy, zeros } from './creation';
import { withDType } from './dispatch';
import { sumToShape } from './reduce';

/** @internal Normalizes dim for an op (negative dims count from the end). */
export function dimIndex(op: string, dim: number, ndim: number): number {
  return normalizeDim(op, dim, ndim);
}

/** @internal Accepts both f(2, 3) and f([2, 3]). */
export function shapeArgs(args: number[] | [readonly number[]]): number[] {
  return args.length === 1 && Array.isArray(args[0]) ? [...(args[0] as readonly number[])] : (args as number[]);
}

/** Resolves one -1 entry and checks the element count. */
function inferSize(op: string, x: Tensor, shape: readonly number[]): number[] {
  const out = [...shape];
  let infer = -1;
  let known = 1;
  for (let i = 0; i < out.length; i++) {
    if (out[i] === -1) {
      if (infer >= 0) throw new ShapeError(op, `only one dimension can be -1, got ${shapeStr(shape)}`);
      infer = i;
    } else if (!Number.isInteger(out[i]) || out[i] < 0) {
      throw new ShapeError(op, `invalid shape ${shapeStr(shape)}`);
    } else known *= out[i];
  }
  if (infer >= 0) {
    if (known === 0 || x.numel % known !== 0) {
      throw new ShapeError(op, `shape ${shapeStr(shape)} is invalid for input of shape ${shapeStr(x.shape)} (${x.numel} elements)`);
    }
    out[infer] = x.numel / known;
  }
  if (numel(out) !== x.numel) {
    throw new ShapeError(op, `shape ${shapeStr(shape)} is invalid for input of shape ${shapeStr(x.shape)} (${x.numel} elements)`);
  }
  return out;
}

/** Strides for viewing x with newShape without a copy, or null when the layout does not allow it. */
function viewStrides(x: Tensor, newShape: readonly number[]): number[] | null {
  if (x.numel === 0 || x.isContiguous()) return contiguousStrides(newShape);
  // Walk groups of old dims that are contiguous among themselves and match them to new dims.
  const oldShape = x.shape, oldStrides = x.strides;
  const out = new Array<number>(newShape.length);
  let viewD = newShape.length - 1;
  let chunkBase = oldStrides[oldStrides.length - 1];
  let tensorNumel = 1;
  let viewNumel = 1;
  for (let d = oldShape.length - 1; d >= 0; d--) {
    tensorNumel *= oldShape[d];
    if (d === 0 || (oldShape[d - 1] !== 1 && oldStrides[d - 1] !== tensorNumel * chunkBase)) {
      while (viewD >= 0 && (viewNumel < tensorNumel || newShape[viewD] === 1)) {
        out[viewD] = viewNumel * chunkBase;
        viewNumel *= newShape[viewD];
        viewD--;
      }
      if (viewNumel !== tensorNumel) return null;
      if (d > 0) {
        chunkBase = oldStrides[d - 1];
        tensorNumel = 1;
        viewNumel = 1;
      }
    }
  }
  if (viewD !== -1) return null;
  return out;
}

function viewOp(name: string, x: Tensor, shape: number[], strides: readonly number[], offset: number): Tensor {
  const out = x._viewAs(shape, strides, offset);
  const inShape = x.shape;
  return recordOp(name, [x], out, [], (g) => [reshape(g, inShape)]);
}

/** x with a new shape (one entry may be -1); a view when the layout allows, else a copy. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  x._check('reshape');
  const s = inferSize('reshape', x, shape);
  const st = viewStrides(x, s);
  if (st) return viewOp('reshape', x, s, st, x.offset);
  const c = contiguous(x);
  const out = viewOp('reshape', c, s, contiguousStrides(s), 0);
  c.dispose();
  return out;
}

/** Like reshape, but never copies: throws when x's layout does not allow the view. */
export function view(x: Tensor, shape: readonly number[]): Tensor {
  x._check('view');
  const s = inferSize('view', x, shape);
  const st = viewStrides(x, s);
  if (!st) {
    throw new ShapeError('view', `cannot view shape ${shapeStr(x.shape)} with strides ${shapeStr(x.strides)} as ${shapeStr(s)}; use reshape() or contiguous()`);
  }
  return viewOp('view', x, s, st, x.offset);
}

/**
 * A view with the dims reordered: result dim i is x's dim dims[i] (like torch.permute). dims must name
 * each dim once.
 */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  x._check('permute');
  if (dims.length !== x.ndim) throw new ShapeError('permute', `got ${dims.length} dims for a tensor of shape ${shapeStr(x.shape)}`);
  const p = dims.map((d) => normalizeDim('permute', d, x.ndim));
  if (new Set(p).size !== p.length) throw new IndexError('permute', `dims ${shapeStr(dims)} repeat a dimension`);
  const out = x._viewAs(p.map((d) => x.shape[d]), p.map((d) => x.strides[d]), x.offset);
  const inverse = new Array<number>(p.length);
  p.forEach((d, i) => (inverse[d] = i));
  return recordOp('permute', [x], out, [], (g) => [permute(g, inverse)]);
}

/** A view with dims d0 and d1 swapped (negative dims count from the end). */
export function transpose(x: Tensor, d0: number, d1: number): Tensor {
  const p = Array.from({ length: x.ndim }, (_, i) => i);
  const a = normalizeDim('transpose', d0, x.ndim), b = normalizeDim('transpose', d1, x.ndim);
  [p[a], p[b]] = [p[b], p[a]];
  return permute(x, p);
}

/**
 * The transpose of a matrix (a view); 0-d and 1-D tensors come back as they are. More than 2 dims is a
 * ShapeError.
 */
export function t(x: Tensor): Tensor {
  if (x.ndim > 2) throw new ShapeError('t', `expects a tensor of at most 2 dimensions, got ${shapeStr(x.shape)}`);
  return x.ndim < 2 ? viewOp('t', x, [...x.shape], x.strides, x.offset) : transpose(x, 0, 1);
}

/** Broadcasts x to shape (size-1 dims stretch with stride 0; -1 keeps a size; new dims go in front). */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  x._check('expand');
  if (shape.length < x.ndim) {
    throw new ShapeError('expand', `cannot expand shape ${shapeStr(x.shape)} to ${shapeStr(shape)}`);
  }
  const lead = shape.length - x.ndim;
  const outShape: number[] = [];
  const strides: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    const want = shape[i];
    if (i < lead) {
      if (!Number.isInteger(want) || want < 0) throw new ShapeError('expand', `cannot expand shape ${shapeStr(x.shape)} to ${shapeStr(shape)}`);
      outShape.push(want);
      strides.push(0);
      continue;
    }
    const have = x.shape[i - lead];
    if (want === -1 || want === have) {
      outShape.push(have);
      strides.push(x.strides[i - lead]);
    } else if (have === 1 && Number.isInteger(want) && want >= 0) {
      outShape.push(want);
      strides.push(0);
    } else {
      throw new ShapeError('expand', `cannot expand shape ${shapeStr(x.shape)} to ${shapeStr(shape)}`);
    }
  }
  if (sameShape(outShape, x.shape)) return x;
  checkNumel('expand', outShape);
  const out = x._viewAs(outShape, strides, x.offset);
  const inShape = x.shape;
  return recordOp('expand', [x], out, [], (g) => [sumToShape(g, inShape)]);
}

/** Removes size-1 dims (all of them, or those listed). */
export function squeeze(x: Tensor, dim?: number | readonly number[]): Tensor {
  x._check('squeeze');
  const dims = dim === undefined ? null : new Set((typeof dim === 'number' ? [dim] : dim).map((d) => normalizeDim('squeeze', d, x.ndim)));
  const shape: number[] = [], strides: number[] = [];
  x.shape.forEach((s, i) => {
    if (s === 1 && (!dims || dims.has(i))) return;
    shape.push(s);
    strides.push(x.strides[i]);
  });
  return viewOp('squeeze', x, shape, strides, x.offset);
}

/** Inserts a size-1 dim at position dim. */
export function unsqueeze(x: Tensor, dim: number): Tensor {
  x._check('unsqueeze');
  const d = normalizeDim('unsqueeze', dim, x.ndim, true);
  const shape = [...x.shape], strides = [...x.strides];
  shape.splice(d, 0, 1);
  strides.splice(d, 0, d < x.ndim ? x.strides[d] * x.shape[d] : 1);
  return viewOp('unsqueeze', x, shape, strides, x.offset);
}

/** Merges dims startDim..endDim into one. */
export function flatten(x: Tensor, startDim = 0, endDim = -1): Tensor {
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normalizeDim('flatten', startDim, x.ndim), e = normalizeDim('flatten', endDim, x.ndim);
  if (s > e) throw new IndexError('flatten', `startDim ${startDim} comes after endDim ${endDim}`);
  const shape = [...x.shape.slice(0, s), numel(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)];
  return reshape(x, shape);
}

/** Splits dim into sizes (one may be -1). */
export function unflatten(x: Tensor, dim: number, sizes: readonly number[]): Tensor {
  const d = normalizeDim('unflatten', dim, x.ndim);
  const shape = [...x.shape.slice(0, d), ...sizes, ...x.shape.slice(d + 1)];
  return reshape(x, shape);
}

/** Backward of a slicing view: the gradient placed into zeros of the input's shape. */
function sliceBackward(g: Tensor, inShape: readonly number[], shape: readonly number[], strides: readonly number[], offset: number): Tensor {
  const z = zeros(inShape, { dtype: g.dtype, device: g.device });
  const v = z._viewAs(shape, strides, offset);
  native.copy(g._h, v._h);
  v.dispose();
  return z;
}

/** Elements start..end (exclusive) with step along dim, as a view. */
export function slice(x: Tensor, dim: number, start?: number, end?: number, step = 1): Tensor {
  x._check('slice');
  const d = normalizeDim('slice', dim, x.ndim);
  const n = x.shape[d];
  if (!Number.isInteger(step) || step < 1) throw new ValueError('slice', `step must be a positive integer, got ${step}`);
  const clampIdx = (v: number | undefined, dflt: number) => {
    if (v === undefined) return dflt;
    if (!Number.isInteger(v)) throw new IndexError('slice', `index ${v} is not an integer`);
    return Math.min(Math.max(v < 0 ? v + n : v, 0), n);
  };
  const s = clampIdx(start, 0), e = Math.max(clampIdx(end, n), s);
  const len = Math.ceil((e - s) / step);
  const shape = [...x.shape], strides = [...x.strides];
  shape[d] = len;
  strides[d] = x.strides[d] * step;
  const offset = x.offset + (len > 0 ? s * x.strides[d] : 0);
  const out = x._viewAs(shape, strides, offset);
  const inShape = x.shape;
  const relStrides = contiguousStrides(inShape).map((st, i) => (i === d ? st * step : st));
  const relOffset = len > 0 ? s * contiguousStrides(inShape)[d] : 0;
  return recordOp('slice', [x], out, [], (g) => [sliceBackward(g, inShape, shape, relStrides, relOffset)]);
}

/** length elements from start along dim (a view); start may be negative. */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  const d = normalizeDim('narrow', dim, x.ndim);
  const n = x.shape[d];
  const s = start < 0 ? start + n : start;
  if (!Number.isInteger(s) || !Number.isInteger(length) || s < 0 || length < 0 || s + length > n) {
    throw new IndexError('narrow', `start ${start} and length ${length} are out of range for dim ${dim} of size ${n}`);
  }
  return slice(x, d, s, s + length);
}

/** The sub-tensor at index along dim, without that dim (a view). */
export function select(x: Tensor, dim: number, index: number): Tensor {
  x._check('select');
  const d = normalizeDim('select', dim, x.ndim);
  const n = x.shape[d];
  const i = index < 0 ? index + n : index;
  if (!Number.isInteger(i) || i < 0 || i >= n) {
    throw new IndexError('select', `index ${index} is out of range for dim ${dim} of size ${n}`);
  }
  const shape = [...x.shape], strides = [...x.strides];
  shape.splice(d, 1);
  strides.splice(d, 1);
  const out = x._viewAs(shape, strides, x.offset + i * x.strides[d]);
  const inShape = x.shape;
  const rel = contiguousStrides(inShape);
  const relStrides = rel.filter((_, k) => k !== d);
  return recordOp('select', [x], out, [], (g) => [sliceBackward(g, inShape, shape, relStrides, i * rel[d])]);
}

/** x itself when contiguous, else a contiguous copy. */
export function contiguous(x: Tensor): Tensor {
  x._check('contiguous');
  if (x.isContiguous()) return x;
  return recordOp('contiguous', [x], contiguousCopy(x), [], (g) => [g]);
}

/** Pieces of size `size` (the last may be smaller) or of the listed sizes along dim. */
export function split(x: Tensor, sizeOrSections: number | readonly number[], dim = 0): Tensor[] {
  const d = normalizeDim('split', dim, x.ndim);
  const n = x.shape[d];
  let sizes: number[];
  if (typeof sizeOrSections === 'number') {
    if (!Number.isInteger(sizeOrSections) || sizeOrSections <= 0) throw new ValueError('split', `split size must be a positive integer, got ${sizeOrSections}`);
    sizes = [];
    for (let s = 0; s < n; s += sizeOrSections) sizes.push(Math.min(sizeOrSections, n - s));
    if (n === 0) sizes.push(0);
  } else {
    sizes = [...sizeOrSections];
    if (sizes.some((s) => !Number.isInteger(s) || s < 0) || sizes.reduce((a, b) => a + b, 0) !== n) {
      throw new ShapeError('split', `sections ${shapeStr(sizes)} do not sum to ${n} (dim ${dim} of ${shapeStr(x.shape)})`);
    }
  }
  const out: Tensor[] = [];
  let start = 0;
  for (const s of sizes) {
    out.push(narrow(x, d, start, s));
    start += s;
  }
  return out;
}

/** chunks pieces of (nearly) equal size along dim, like torch.chunk. */
export function chunk(x: Tensor, chunks: number, dim = 0): Tensor[] {
  if (!Number.isInteger(chunks) || chunks <= 0) throw new ValueError('chunk', `chunks must be a positive integer, got ${chunks}`);
  const d = normalizeDim('chunk', dim, x.ndim);
  return split(x, Math.max(1, Math.ceil(x.shape[d] / chunks)), d);
}

/** Joins tensors of equal shape except along dim (mixed dtypes join in their promoted dtype). */
export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new ValueError('cat', 'expects at least one tensor');
  const first = tensors[0];
  const d = normalizeDim('cat', dim, first.ndim);
  let total = 0;
  for (const t of tensors) {
    t._check('cat');
    if (t.ndim !== first.ndim || t.shape.some((s, i) => i !== d && s !== first.shape[i])) {
      throw new ShapeError('cat', `shapes ${tensors.map((x) => shapeStr(x.shape)).join(', ')} differ outside dim ${dim}`);
    }
    if (t._dev !== first._dev) throw new DeviceError('cat', `tensors are on ${first.device} and ${t.device}`);
    total += t.shape[d];
  }
  // Mixed dtypes join in their promoted dtype, as torch.cat does (autocast mixes bf16 and float32).
  const dtype = tensors.map((x) => x.dtype).reduce(promoteTypes);
  if (tensors.some((x) => x.dtype !== dtype)) return withDType(dtype, tensors, (cs) => cat(cs, dim));
  const shape = [...first.shape];
  shape[d] = total;
  const out = emptyTensor(shape, first.dtype, first._dev);
  const strides = contiguousStrides(shape);
  let start = 0;
  const sizes: number[] = [];
  for (const t of tensors) {
    const part = out._viewAs(t.shape, strides, start * strides[d]);
    native.copy(t._h, part._h);
    part.dispose();
    sizes.push(t.shape[d]);
    start += t.shape[d];
  }
  return recordOp('cat', tensors, out, [], (g) => split(g, sizes, d));
}

/** Joins tensors of equal shape along a new dim. */
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new ValueError('stack', 'expects at least one tensor');
  const first = tensors[0];
  for (const t of tensors) {
    if (!sameShape(t.shape, first.shape)) throw new ShapeError('stack', `shapes ${tensors.map((x) => shapeStr(x.shape)).join(', ')} differ`);
  }
  const d = normalizeDim('stack', dim, first.ndim, true);
  const parts = tensors.map((t) => unsqueeze(t, d));
  const out = cat(parts, d);
  for (const p of parts) p.dispose();
  return out;
}

/** Tiles x: repeat([2, 3]) of a [a, b] tensor is [2a, 3b] (like torch.repeat). */
export function repeat(x: Tensor, reps: readonly number[]): Tensor {
  checkShape('repeat', reps);
  if (reps.length < x.ndim) throw new ShapeError('repeat', `needs at least ${x.ndim} repeat counts for shape ${shapeStr(x.shape)}`);
  const padded = [...new Array(reps.length - x.ndim).fill(1), ...x.shape];
  const inter: number[] = [];
  const expanded: number[] = [];
  padded.forEach((s, i) => {
    inter.push(1, s);
    expanded.push(reps[i], s);
  });
  checkNumel('repeat', expanded);
  const a = reshape(x, inter);
  const b = expand(a, expanded);
  const c = contiguous(b);
  const out = reshape(c, padded.map((s, i) => s * reps[i]));
  for (const t of [a, b, c]) if (t !== x && t !== out) t.dispose();
  return out;
}
