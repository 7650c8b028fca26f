// Indexing ops: embedding, indexSelect, gather and scatterAdd, each with its backward rule next to
// it. Shapes, dims and dtypes are checked here; index values are checked by the native kernels,
// which never read or write through a bad index. On the CPU they throw IndexError (naming the op, the
// value and the valid range) before touching memory; on CUDA the kernel records the bad index and
// the IndexError is thrown at the next synchronization with that device (the next read back).
import { recordOp } from '../autograd/engine';
import { DType, isIntegral } from '../dtype';
import { DTypeError, DeviceError, IndexError, ShapeError } from '../errors';
import { NativeHandle, native } from '../native';
import { normalizeDim, sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { contiguousCopy, zeros } from './creation';

interface IndexNative {
  gather(x: NativeHandle, dim: number, index: NativeHandle, out: NativeHandle): void;
  indexSelect(x: NativeHandle, dim: number, index: NativeHandle, out: NativeHandle): void;
  embedding(weight: NativeHandle, indices: NativeHandle, out: NativeHandle): void;
  indexAdd(out: NativeHandle, dim: number, index: NativeHandle, src: NativeHandle): void;
  embeddingBackward(gradWeight: NativeHandle, indices: NativeHandle, grad: NativeHandle): void;
  scatterAdd(out: NativeHandle, dim: number, index: NativeHandle, src: NativeHandle): void;
}
const N = native as unknown as IndexNative;


function checkIndex(op: string, index: Tensor, name = 'index'): void {
  index._check(op);
  if (!isIntegral(index.dtype)) throw new DTypeError(op, `${name} must be int32 or int64, got ${index.dtype}`);
}

function checkDevices(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    t._check(op);
    if (t._dev !== ts[0]._dev) throw new DeviceError(op, `expected all tensors on one device, got ${ts[0].device} and ${t.device}`);
  }
}

function checkAccumulates(op: string, dtype: DType): void {
  if (dtype === 'bool') throw new DTypeError(op, 'dtype bool is not supported: it cannot accumulate sums');
}

/** gather/scatterAdd: index has data's rank and, outside dim (all dims when dim is -1), no larger sizes. */
function checkIndexFits(op: string, data: Tensor, dataName: string, index: Tensor, dim: number): void {
  if (index.ndim !== data.ndim) {
    throw new ShapeError(op, `index ${shapeStr(index.shape)} must have as many dims as ${dataName} ${shapeStr(data.shape)}`);
  }
  for (let k = 0; k < data.ndim; k++) {
    if (k !== dim && index.shape[k] > data.shape[k]) {
      throw new ShapeError(op, `index ${shapeStr(index.shape)} is larger than ${dataName} ${shapeStr(data.shape)} at dim ${k}`);
    }
  }
}

/** Runs a native fill of a fresh output; disposes the output when the fill throws. */
function fillInto(out: Tensor, fill: (out: NativeHandle) => void): Tensor {
  try {
    fill(out._h);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}

/** Zeros like the gradient, in shape. */
function zerosFor(g: Tensor, shape: readonly number[]): Tensor {
  return zeros(shape, { dtype: g.dtype, device: g.device });
}

/**
 * Rows of weight ([num, dim]) picked by indices (int32/int64, any shape): the result has shape
 * [...indices.shape, dim] (like torch.nn.functional.embedding). The gradient accumulates into
 * weight's rows, summing over repeated indices.
 */
export function embedding(indices: Tensor, weight: Tensor): Tensor {
  const op = 'embedding';
  checkIndex(op, indices, 'indices');
  checkDevices(op, weight, indices);
  if (weight.ndim !== 2) throw new ShapeError(op, `weight must be 2-D [num_embeddings, embedding_dim], got ${shapeStr(weight.shape)}`);
  const out = fillInto(emptyTensor([...indices.shape, weight.shape[1]], weight.dtype, weight._dev), (o) =>
    N.embedding(weight._h, indices._h, o),
  );
  const wShape = weight.shape;
  return recordOp(op, [weight], out, [indices], (g, [idx]) => {
    const gw = zerosFor(g, wShape);
    N.embeddingBackward(gw._h, idx._h, g._h);
    return [gw];
  });
}

/** The entries of x at positions index (int32/int64, 1-D) along dim (like torch.index_select). */
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  const op = 'indexSelect';
  checkIndex(op, index);
  checkDevices(op, x, index);
  if (index.ndim > 1) throw new ShapeError(op, `index must be 1-D, got shape ${shapeStr(index.shape)}`);
  const d = normalizeDim(op, dim, x.ndim);
  if (x.ndim === 0 && index.numel !== 1) {
    throw new IndexError(op, `index of a 0-d tensor must hold one value, got ${index.numel}`);
  }
  const shape = [...x.shape];
  if (x.ndim > 0) shape[d] = index.numel;
  const idx = index.ndim === 0 ? index._viewAs([1], [1], index.offset) : index;
  try {
    const out = fillInto(emptyTensor(shape, x.dtype, x._dev), (o) => N.indexSelect(x._h, d, idx._h, o));
    const xShape = x.shape;
    return recordOp(op, [x], out, [idx], (g, [i]) => {
      const gx = zerosFor(g, xShape);
      N.indexAdd(gx._h, d, i._h, g._h);
      return [gx];
    });
  } finally {
    if (idx !== index) idx.dispose();
  }
}

/**
 * out[i] = x[i with coordinate dim replaced by index[i]] (like torch.gather): index has x's rank,
 * sizes no larger than x's outside dim, and gives the output's shape.
 */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  const op = 'gather';
  checkIndex(op, index);
  checkDevices(op, x, index);
  const d = normalizeDim(op, dim, x.ndim);
  checkIndexFits(op, x, 'input', index, d);
  const out = fillInto(emptyTensor(index.shape, x.dtype, x._dev), (o) => N.gather(x._h, d, index._h, o));
  const xShape = x.shape;
  return recordOp(op, [x], out, [index], (g, [idx]) => {
    const gx = zerosFor(g, xShape);
    N.scatterAdd(gx._h, d, idx._h, g._h);
    return [gx];
  });
}

/**
 * x with src[i] added at x[i with coordinate dim replaced by index[i]] for every i of index's shape
 * (out-of-place torch.scatter_add). index has x's rank, sizes no larger than src's, nor than x's
 * outside dim; x and src share a dtype (any but bool).
 */
export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor): Tensor {
  const op = 'scatterAdd';
  checkIndex(op, index);
  checkDevices(op, x, index, src);
  if (src.dtype !== x.dtype) throw new DTypeError(op, `src dtype ${src.dtype} does not match input dtype ${x.dtype}`);
  checkAccumulates(op, x.dtype);
  const d = normalizeDim(op, dim, x.ndim);
  checkIndexFits(op, x, 'input', index, d);
  checkIndexFits(op, src, 'src', index, -1);
  const out = fillInto(contiguousCopy(x), (o) => N.scatterAdd(o, d, index._h, src._h));
  const srcShape = src.shape;
  return recordOp(op, [x, src], out, [index], (g, [idx], needs) => {
    let gsrc: Tensor | null = null;
    if (needs[1]) {
      // src entries outside index's shape were never added: their gradient is zero.
      const whole = sameShape(srcShape, idx.shape);
      gsrc = whole ? emptyTensor(srcShape, g.dtype, g._dev) : zerosFor(g, srcShape);
      const part = whole ? gsrc : gsrc._viewAs(idx.shape, gsrc.strides, 0);
      N.gather(g._h, d, idx._h, part._h);
      if (part !== gsrc) part.dispose();
    }
    return [needs[0] ? g : null, gsrc];
  });
}
