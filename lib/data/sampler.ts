// Samplers: which dataset indices a DataLoader visits in an epoch, and in what order. The
// DistributedSampler gives each rank of a data-parallel job its own share of every epoch
// (torch.utils.data.distributed.DistributedSampler): all ranks draw the same seeded permutation of
// (seed, epoch), pad it by wrapping around to a multiple of the rank count (or drop the tail), and
// rank r takes every count-th index from position r. The DataLoader's epoch drives it, so no
// set_epoch call is needed.
import { ValueError } from '../errors';
import { rank, worldSize } from '../dist/process_group';
import { Rng } from './rng';

/** Which indices an epoch visits, in order (a DataLoader's `sampler` option). */
export interface Sampler {
  /** Indices per epoch. */
  readonly length: number;
  /** The indices epoch `epoch` visits, in order. */
  order(epoch: number): Uint32Array;
}

/** Options of a DistributedSampler; rank and numReplicas default to the process group's. */
export interface DistributedSamplerOptions {
  /** Ranks sharing the data (default: dist.worldSize()). */
  numReplicas?: number;
  /** This rank (default: dist.rank()). */
  rank?: number;
  /** A new seeded order each epoch (default true). */
  shuffle?: boolean;
  /** Seed of the orders; must be the same on every rank (default 0). */
  seed?: number;
  /**
   * Drop the tail that does not divide evenly among the ranks (default false: wrap around to the
   * start, so a few items appear twice in an epoch).
   */
  dropLast?: boolean;
}

/** Each rank's share of a dataset per epoch; pass it as a DataLoader's `sampler`. */
export class DistributedSampler implements Sampler {
  /** Ranks sharing the data. */
  readonly numReplicas: number;
  /** This rank. */
  readonly rank: number;
  /** Whether each epoch has a new order. */
  readonly shuffle: boolean;
  /** Seed of the orders. */
  readonly seed: number;
  /** Whether the uneven tail is dropped. */
  readonly dropLast: boolean;
  /** Items per rank per epoch. */
  readonly length: number;
  private readonly n: number;

  constructor(dataset: { readonly length: number }, opts: DistributedSamplerOptions = {}) {
    const op = 'DistributedSampler';
    if (!dataset || !Number.isInteger(dataset.length) || dataset.length < 0) throw new ValueError(op, 'dataset must have an integer length');
    this.numReplicas = opts.numReplicas ?? worldSize();
    this.rank = opts.rank ?? rank();
    if (!Number.isInteger(this.numReplicas) || this.numReplicas < 1) throw new ValueError(op, `numReplicas must be a positive integer, got ${this.numReplicas}`);
    if (!Number.isInteger(this.rank) || this.rank < 0 || this.rank >= this.numReplicas) {
      throw new ValueError(op, `rank must be an integer in [0, ${this.numReplicas}), got ${this.rank}`);
    }
    this.shuffle = opts.shuffle ?? true;
    this.seed = opts.seed ?? 0;
    if (!Number.isSafeInteger(this.seed) || this.seed < 0) throw new ValueError(op, `seed must be a non-negative integer, got ${this.seed}`);
    this.dropLast = opts.dropLast ?? false;
    this.n = dataset.length;
    this.length = this.dropLast ? Math.floor(this.n / this.numReplicas) : Math.ceil(this.n / this.numReplicas);
  }

  /** This rank's indices in epoch `epoch`: positions rank, rank + numReplicas, ... of the padded order. */
  order(epoch: number): Uint32Array {
    const n = this.n;
    const all = this.shuffle ? new Rng(this.seed, epoch).permutation(n) : Uint32Array.from({ length: n }, (_, i) => i);
    const out = new Uint32Array(this.length);
    for (let k = 0; k < this.length; k++) out[k] = all[(this.rank + k * this.numReplicas) % Math.max(n, 1)];
    return out;
  }
}
