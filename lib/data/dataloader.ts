// DataLoader: batches of a Dataset in order or shuffled by a seeded permutation per epoch (so a run
// repeats, and each epoch differs), with dropLast, a custom collate, and a stateDict that resumes
// in the middle of an epoch. The default collate stacks tensors and turns numbers into tensors.
import { ValueError } from '../errors';
import { tidy } from '../memory';
import { tensor } from '../ops/creation';
import { stack } from '../ops/shape';
import { Tensor } from '../tensor';
import type { Dataset } from './dataset';
import { Rng } from './rng';
import { DistributedSampler } from './sampler';
import type { Sampler } from './sampler';

/** Options of a DataLoader (like the keyword arguments of torch.utils.data.DataLoader). */
export interface DataLoaderOptions<T, B> {
  /** Items per batch (default 1). */
  batchSize?: number;
  /** Visit the items in a new random order each epoch (default false). */
  shuffle?: boolean;
  /** Seed of the shuffling; epoch e uses the permutation of (seed, e). Default: a random seed. */
  seed?: number;
  /** Leave out the last batch when it would be smaller than batchSize (default false). */
  dropLast?: boolean;
  /** Makes a batch from its items (default: defaultCollate). */
  collate?: (items: T[]) => B;
  /**
   * Which items each epoch visits, in order (a DistributedSampler gives each rank its share); it
   * replaces shuffle and seed. The DataLoader's epoch is passed to it, so each epoch differs.
   */
  sampler?: Sampler;
}

/** Where a DataLoader's stream is, for checkpoints: loadStateDict() continues from here. */
export interface DataLoaderStateDict {
  /** The seed of the shuffled orders. */
  seed: number;
  /** The epoch in progress (or the next one, between epochs). */
  epoch: number;
  /** Batches of `epoch` already yielded. */
  position: number;
  /**
   * With a DistributedSampler: the ranks sharing the data when saved. Loading into a loader whose
   * sampler has another count scales position, so the run resumes near the same point of the epoch.
   */
  replicas?: number;
}

/**
 * The batch type that defaultCollate makes of items of type T, so that a DataLoader without a collate
 * function has a typed batch: a Dataset<[Tensor, Tensor]> gives [Tensor, Tensor] batches.
 */
export type Collated<T> = T extends Tensor | number | boolean
  ? Tensor
  : T extends string
    ? string[]
    : T extends readonly unknown[]
      ? { -readonly [K in keyof T]: Collated<T[K]> }
      : T extends object
        ? { [K in keyof T]: Collated<T[K]> }
        : unknown;

/**
 * Combines items into a batch like PyTorch's default_collate: tensors are stacked along a new first
 * dimension, numbers and booleans become a tensor (int64 for whole numbers, float32 otherwise, bool),
 * strings stay an array, and arrays and plain objects are collated element by element.
 */
export function defaultCollate(items: unknown[]): unknown {
  const op = 'defaultCollate';
  if (items.length === 0) throw new ValueError(op, 'cannot collate an empty batch');
  const first = items[0];
  const all = (pred: (x: unknown) => boolean, what: string) => {
    if (!items.every(pred)) throw new ValueError(op, `item 0 is ${what} but not every item is`);
  };
  if (first instanceof Tensor) {
    all((x) => x instanceof Tensor, 'a tensor');
    return stack(items as Tensor[]);
  }
  if (typeof first === 'number' || typeof first === 'boolean') {
    all((x) => typeof x === typeof first, `a ${typeof first}`);
    return tensor(items as number[] | boolean[]);
  }
  if (typeof first === 'string') {
    all((x) => typeof x === 'string', 'a string');
    return items;
  }
  if (Array.isArray(first)) {
    all((x) => Array.isArray(x) && x.length === first.length, `an array of ${first.length} elements`);
    return first.map((_, j) => defaultCollate(items.map((x) => (x as unknown[])[j])));
  }
  if (first !== null && typeof first === 'object' && Object.getPrototypeOf(first) === Object.prototype) {
    const keys = Object.keys(first);
    all((x) => x !== null && typeof x === 'object' && Object.keys(x).length === keys.length && keys.every((k) => k in (x as object)), `an object with keys ${keys.join(', ')}`);
    return Object.fromEntries(keys.map((k) => [k, defaultCollate(items.map((x) => (x as Record<string, unknown>)[k]))]));
  }
  throw new ValueError(op, `cannot collate items of type ${first === null ? 'null' : typeof first}; pass a collate function`);
}

/**
 * Iterates over a dataset in batches: `for (const batch of loader)` runs one epoch. Batches are new
 * tensors that the caller disposes (or creates inside a tidy scope); the dataset's own per-item
 * tensors are freed once collated.
 */
export class DataLoader<T, B = Collated<T>> implements Iterable<B> {
  /** The dataset the batches come from. */
  readonly dataset: Dataset<T>;
  /** Items per batch (the last batch of an epoch may be smaller unless dropLast). */
  readonly batchSize: number;
  /** Whether each epoch visits the items in a new seeded random order. */
  readonly shuffle: boolean;
  /** Whether a last batch smaller than batchSize is left out. */
  readonly dropLast: boolean;
  /** Seed of the shuffled orders: epoch e visits the permutation of (seed, e). */
  seed: number;
  /** The epoch the next iteration runs (each iteration advances it; set it to jump, like PyTorch's set_epoch). */
  epoch = 0;
  /** The sampler choosing each epoch's items (null: all items, shuffled or in order). */
  readonly sampler: Sampler | null;
  private readonly collate: ((items: T[]) => B) | undefined;
  private resumeAt = 0;
  private current: { epoch: number; position: number } | null = null;

  constructor(dataset: Dataset<T>, opts: DataLoaderOptions<T, B> = {}) {
    const op = 'DataLoader';
    if (!dataset || typeof dataset.get !== 'function' || !Number.isInteger(dataset.length) || dataset.length < 0) {
      throw new ValueError(op, 'dataset must have an integer length and a get(index) method');
    }
    const bs = opts.batchSize ?? 1;
    if (!Number.isInteger(bs) || bs < 1) throw new ValueError(op, `batchSize must be a positive integer, got ${bs}`);
    if (opts.collate !== undefined && typeof opts.collate !== 'function') throw new ValueError(op, 'collate must be a function');
    this.dataset = dataset;
    this.batchSize = bs;
    this.shuffle = opts.shuffle ?? false;
    this.dropLast = opts.dropLast ?? false;
    this.collate = opts.collate;
    if (opts.sampler !== undefined) {
      if (!opts.sampler || typeof opts.sampler.order !== 'function' || !Number.isInteger(opts.sampler.length)) {
        throw new ValueError(op, 'sampler must have an integer length and an order(epoch) method');
      }
      if (opts.shuffle) throw new ValueError(op, 'sampler and shuffle exclude each other (the sampler decides the order)');
    }
    this.sampler = opts.sampler ?? null;
    const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 32);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new ValueError(op, `seed must be a non-negative integer, got ${seed}`);
    this.seed = seed;
  }

  /** Batches per epoch. */
  get length(): number {
    const n = this.sampler ? this.sampler.length : this.dataset.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** The order in which epoch `epoch` visits the items. */
  order(epoch: number): Uint32Array {
    if (this.sampler) return this.sampler.order(epoch);
    const n = this.dataset.length;
    if (this.shuffle) return new Rng(this.seed, epoch).permutation(n);
    const out = new Uint32Array(n);
    for (let i = 0; i < n; i++) out[i] = i;
    return out;
  }

  /**
   * Runs one epoch: yields its batches (continuing a loaded stateDict mid-epoch) and advances epoch.
   */
  *[Symbol.iterator](): Iterator<B> {
    const epoch = this.epoch;
    this.epoch = epoch + 1;
    const order = this.order(epoch);
    const state = (this.current = { epoch, position: this.resumeAt });
    this.resumeAt = 0;
    try {
      for (; state.position < this.length; ) {
        const start = state.position * this.batchSize;
        const indices = Array.from(order.subarray(start, Math.min(start + this.batchSize, order.length)));
        state.position++;
        yield this.makeBatch(indices);
      }
    } finally {
      if (this.current === state) this.current = null;
    }
  }

  private makeBatch(indices: number[]): B {
    const ds = this.dataset;
    if (!this.collate && ds.getBatch) return ds.getBatch(indices) as B;
    const collate = this.collate ?? (defaultCollate as (items: T[]) => B);
    return tidy(() => collate(indices.map((i) => ds.get(i))));
  }

  /** Where the data stream is: the epoch in progress and the batches it has yielded, or the next epoch. */
  stateDict(): DataLoaderStateDict {
    const c = this.current;
    const replicas = this.sampler instanceof DistributedSampler ? { replicas: this.sampler.numReplicas } : {};
    if (c) return { seed: this.seed, epoch: c.epoch, position: c.position, ...replicas };
    return { seed: this.seed, epoch: this.epoch, position: this.resumeAt, ...replicas };
  }

  /** The next iteration continues from the saved epoch and position. */
  loadStateDict(sd: DataLoaderStateDict): void {
    const op = 'DataLoader.loadStateDict';
    if (!sd || !Number.isSafeInteger(sd.seed) || sd.seed < 0) throw new ValueError(op, `seed must be a non-negative integer, got ${sd?.seed}`);
    if (!Number.isSafeInteger(sd.epoch) || sd.epoch < 0) throw new ValueError(op, `epoch must be a non-negative integer, got ${sd.epoch}`);
    // A state saved with another number of replicas (none recorded, or no DistributedSampler: one)
    // continues at the same fraction of the epoch's items.
    const saved = sd.replicas ?? 1;
    if (!Number.isInteger(saved) || saved < 1) throw new ValueError(op, `replicas must be a positive integer, got ${sd.replicas}`);
    const now = this.sampler instanceof DistributedSampler ? this.sampler.numReplicas : 1;
    let position = sd.position;
    if (now !== saved && Number.isInteger(position) && position >= 0) position = Math.min(this.length, Math.floor((position * saved) / now));
    if (!Number.isInteger(position) || position < 0 || position > this.length) {
      throw new ValueError(op, `position must be an integer in [0, ${this.length}], got ${position}${position !== sd.position ? ` (${sd.position} saved on ${saved} replicas)` : ''}`);
    }
    this.seed = sd.seed;
    this.epoch = sd.epoch;
    this.resumeAt = position;
    this.current = null;
  }
}
