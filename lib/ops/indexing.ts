// Indexing ops: embedding, indexSelect, gather and scatterAdd, each with its backward rule next to
// it (autocast 'none': they follow their inputs' dtypes). Shapes, dims and dtypes are checked here;
// index values are checked by the native kernels, which never read or write through a bad index. On
// the CPU they throw IndexError (naming the op, the value and the valid range) before touching
// memory; on CUDA the kernel records the bad index and the IndexError is thrown at the next
// synchronization with that device (the next read back).
import { recordOp } from '../autograd/engine';
import { isIntegral } from '../dtype';
import { DTypeError, DeviceError, IndexError, ShapeError } from '../errors';
import type { NativeHandle } from '../native';
import { normalizeDim, sameShape, shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { contiguousCopy, zeros } from './creation';
import { bindKernels, defineOp, fillOutputs } from './dispatch';

const N = bindKernels('index', {
  gather: '(x:T, dim:i, index:T, out:T) -> void',
  indexSelect: '(x:T, dim:i, index:T, out:T) -> void',
  embedding: '(weight:T, indices:T, out:T) -> void',
  indexAdd: '(out:T, dim:i, index:T, src:T) -> void',
  embeddingBackward: '(gradWeight:T, indices:T, grad:T) -> void',
  scatterAdd: '(out:T, dim:i, index:T, src:T) -> void',
});

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

/** Runs a native fill of a fresh output (disposed if the fill throws); returns the output. */
function fillInto(out: Tensor, fill: (out: NativeHandle) => void): Tensor {
  fillOutputs([out], () => fill(out._h));
  return out;
}

/** Zeros like the gradient, in shape. */
function zerosFor(g: Tensor, shape: readonly number[]): Tensor {
  return zeros(shape, { dtype: g.dtype, device: g.device });
}

// Each op names only its forward kernel for defineOp's dtype coverage: the backward kernels take
// every dtype a gradient can have, and listing them would refuse the bool data the forwards copy.

const embeddingOp = defineOp<[indices: Tensor, weight: Tensor]>({
  name: 'embedding',
  inputs: [1],
  kernels: ['embedding'],
  check(indices, weight) {
    const op = 'embedding';
    checkIndex(op, indices, 'indices');
    checkDevices(op, weight, indices);
    if (weight.ndim !== 2) throw new ShapeError(op, `weight must be 2-D [num_embeddings, embedding_dim], got ${shapeStr(weight.shape)}`);
  },
  forward(indices, weight) {
    const out = fillInto(emptyTensor([...indices.shape, weight.shape[1]], weight.dtype, weight._dev), (o) =>
      N.embedding(weight._h, indices._h, o),
    );
    const wShape = weight.shape;
    return recordOp('embedding', [weight], out, [indices], (g, [idx]) => {
      const gw = zerosFor(g, wShape);
      fillOutputs([gw], () => N.embeddingBackward(gw._h, idx._h, g._h));
      return [gw];
    });
  },
});

/**
 * Rows of weight ([num, dim]) picked by indices (int32/int64, any shape): the result has shape
 * [...indices.shape, dim] (like torch.nn.functional.embedding). The gradient accumulates into
 * weight's rows, summing over repeated indices.
 */
export function embedding(indices: Tensor, weight: Tensor): Tensor {
  return embeddingOp(indices, weight);
}

const indexSelectOp = defineOp<[x: Tensor, dim: number, index: Tensor]>({
  name: 'indexSelect',
  inputs: [0],
  kernels: ['indexSelect'],
  check(x, dim, index) {
    const op = 'indexSelect';
    checkIndex(op, index);
    checkDevices(op, x, index);
    if (index.ndim > 1) throw new ShapeError(op, `index must be 1-D, got shape ${shapeStr(index.shape)}`);
    normalizeDim(op, dim, x.ndim);
    if (x.ndim === 0 && index.numel !== 1) {
      throw new IndexError(op, `index of a 0-d tensor must hold one value, got ${index.numel}`);
    }
  },
  forward(x, dim, index) {
    const op = 'indexSelect';
    const d = normalizeDim(op, dim, x.ndim);
    const shape = [...x.shape];
    if (x.ndim > 0) shape[d] = index.numel;
    const idx = index.ndim === 0 ? index._viewAs([1], [1], index.offset) : index;
    try {
      const out = fillInto(emptyTensor(shape, x.dtype, x._dev), (o) => N.indexSelect(x._h, d, idx._h, o));
      const xShape = x.shape;
      return recordOp(op, [x], out, [idx], (g, [i]) => {
        const gx = zerosFor(g, xShape);
        fillOutputs([gx], () => N.indexAdd(gx._h, d, i._h, g._h));
        return [gx];
      });
    } finally {
      if (idx !== index) idx.dispose();
    }
  },
});

/** The entries of x at positions index (int32/int64, 1-D) along dim (like torch.index_select). */
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  return indexSelectOp(x, dim, index);
}

const gatherOp = defineOp<[x: Tensor, dim: number, index: Tensor]>({
  name: 'gather',
  inputs: [0],
  kernels: ['gather'],
  check(x, dim, index) {
    const op = 'gather';
    checkIndex(op, index);
    checkDevices(op, x, index);
    checkIndexFits(op, x, 'input', index, normalizeDim(op, dim, x.ndim));
  },
  forward(x, dim, index) {
    const d = normalizeDim('gather', dim, x.ndim);
    const out = fillInto(emptyTensor(index.shape, x.dtype, x._dev), (o) => N.gather(x._h, d, index._h, o));
    const xShape = x.shape;
    return recordOp('gather', [x], out, [index], (g, [idx]) => {
      const gx = zerosFor(g, xShape);
      fillOutputs([gx], () => N.scatterAdd(gx._h, d, idx._h, g._h));
      return [gx];
    });
  },
});

/**
 * out[i] = x[i with coordinate dim replaced by index[i]] (like torch.gather): index has x's rank,
 * sizes no larger than x's outside dim, and gives the output's shape.
 */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  return gatherOp(x, dim, index);
}

const scatterAddOp = defineOp<[x: Tensor, dim: number, index: Tensor, src: Tensor]>({
  name: 'scatterAdd',
  inputs: [0, 3],
  kernels: ['scatterAdd'],
  check(x, dim, index, src) {
    const op = 'scatterAdd';
    checkIndex(op, index);
    checkDevices(op, x, index, src);
    if (src.dtype !== x.dtype) throw new DTypeError(op, `src dtype ${src.dtype} does not match input dtype ${x.dtype}`);
    checkIndexFits(op, x, 'input', index, normalizeDim(op, dim, x.ndim));
    checkIndexFits(op, src, 'src', index, -1);
  },
  forward(x, dim, index, src) {
    const d = normalizeDim('scatterAdd', dim, x.ndim);
    const out = fillInto(contiguousCopy(x), (o) => N.scatterAdd(o, d, index._h, src._h));
    const srcShape = src.shape;
    return recordOp('scatterAdd', [x, src], out, [index], (g, [idx], needs) => {
      let gsrc: Tensor | null = null;
      if (needs[1]) {
        // src entries outside index's shape were never added: their gradient is zero.
        const whole = sameShape(srcShape, idx.shape);
        const grad = whole ? emptyTensor(srcShape, g.dtype, g._dev) : zerosFor(g, srcShape);
        const part = whole ? grad : grad._viewAs(idx.shape, grad.strides, 0);
        try {
          fillOutputs([grad], () => N.gather(g._h, d, idx._h, part._h));
        } finally {
          if (part !== grad) part.dispose();
        }
        gsrc = grad;
      }
      return [needs[0] ? g : null, gsrc];
    });
  },
});

/**
 * x with src[i] added at x[i with coordinate dim replaced by index[i]] for every i of index's shape
 * (out-of-place torch.scatter_add). index has x's rank, sizes no larger than src's, nor than x's
 * outside dim; x and src share a dtype (any the addon's scatterAdd kernel takes: all but bool).
 */
export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor): Tensor {
  return scatterAddOp(x, dim, index, src);
}
