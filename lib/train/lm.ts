// Language-model data for the Trainer: windowSampler turns a data.TokenFileDataset (or anything
// that samples random (input, target) windows and can save its generator state) into a
// BatchSampler, so that checkpoints record where the sampling was.
import { ValueError } from '../errors';
import type { Tensor } from '../tensor';
import type { BatchSampler } from './trainer';

/** Anything that samples random windows and can save where its generator is (data.TokenFileDataset). */
export interface WindowSource {
  /** batchSize random (input, target) windows, each tensor of shape [batchSize, blockSize]. */
  sampleBatch(batchSize: number): [Tensor, Tensor];
  /** Where the generator is, to continue the same sequence after a resume. */
  stateDict(): {
    /** The generator's state. */
    rng: number[];
  };
  /** Restores the generator from stateDict(). */
  loadStateDict(sd: { rng: number[] }): void;
}

/** A BatchSampler of batchSize random windows per batch. */
export function windowSampler(source: WindowSource, batchSize: number): BatchSampler<[Tensor, Tensor]> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ValueError('windowSampler', `batchSize must be a positive integer, got ${batchSize}`);
  return {
    sample: () => source.sampleBatch(batchSize),
    stateDict: () => source.stateDict(),
    loadStateDict: (s) => source.loadStateDict(s),
  };
}
