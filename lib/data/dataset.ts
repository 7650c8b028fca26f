// Datasets: the Dataset interface (a length and get(i)) and TensorDataset, which indexes the first
// dimension of several tensors together and builds whole batches with one gather per tensor.
import { IndexError, ShapeError, ValueError } from '../errors';
import { tensor } from '../ops/creation';
import { indexSelect } from '../ops/indexing';
import { shapeStr } from '../shape';
import type { Tensor } from '../tensor';

/** A map-style dataset: `length` items, read by index. */
export interface Dataset<T> {
  /** Number of items. */
  readonly length: number;
  /** The item at index, an integer in [0, length) (an IndexError otherwise, by convention). */
  get(index: number): T;
  /**
   * Optional: the collated batch of the items at `indices` in one go (what DataLoader's default
   * collate would make of them), for datasets that can build it faster than item by item.
   */
  getBatch?(indices: readonly number[]): unknown;
}

/** @internal Throws IndexError unless i is an integer in [0, n). */
export function checkIndex(op: string, i: number, n: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= n) throw new IndexError(op, `index ${i} is out of range for a dataset of ${n} items`);
}

/** Items are the slices t[i] of each tensor along the first dimension (views sharing storage). */
export class TensorDataset implements Dataset<Tensor[]> {
  /** The tensors, in the order given; item i holds their slices at i. */
  readonly tensors: readonly Tensor[];
  /** Number of items: the first dimension of the tensors. */
  readonly length: number;

  /**
   * Tensors sharing their first dimension (a ShapeError otherwise), like
   * torch.utils.data.TensorDataset.
   */
  constructor(...tensors: Tensor[]) {
    if (tensors.length === 0) throw new ValueError('TensorDataset', 'needs at least one tensor');
    const n = tensors[0].ndim > 0 ? tensors[0].shape[0] : -1;
    if (tensors.some((t) => t.ndim === 0 || t.shape[0] !== n)) {
      throw new ShapeError('TensorDataset', `tensors must share their first dimension, got shapes ${tensors.map((t) => shapeStr(t.shape)).join(', ')}`);
    }
    this.tensors = tensors;
    this.length = n;
  }

  /** The slices at index of each tensor, as views (an IndexError outside [0, length)). */
  get(index: number): Tensor[] {
    checkIndex('TensorDataset.get', index, this.length);
    return this.tensors.map((t) => t.select(0, index));
  }

  /** The stacked items at indices: one indexSelect per tensor. */
  getBatch(indices: readonly number[]): Tensor[] {
    for (const i of indices) checkIndex('TensorDataset.getBatch', i, this.length);
    const idx = tensor(Int32Array.from(indices), { dtype: 'int64' });
    try {
      return this.tensors.map((t) => indexSelect(t, 0, idx));
    } finally {
      idx.dispose();
    }
  }
}
