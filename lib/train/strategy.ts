// How the Trainer runs one optimizer step, in the three parts a distributed strategy wraps:
// forwardBackward (one micro-batch; told whether it is the last of the accumulation window),
// beforeStep (clipping; where data parallelism waits for its gradient all-reduces) and step (the
// optimizer, the LR schedule, zeroGrad). The default TrainStrategy is single-process training;
// subclasses override a part and call super for the rest.
import { clipGradNorm } from '../optim/clip_grad';
import type { LRScheduler } from '../optim/lr_scheduler';
import type { Optimizer } from '../optim/optimizer';
import type { Module } from '../nn/module';
import type { Tensor } from '../tensor';

/** What a strategy's parts work with: the trainer's model, optimizer, schedule and step options. */
export interface StepContext<M extends Module = Module> {
  /** The model being trained. */
  readonly model: M;
  /** The optimizer stepping it. */
  readonly optimizer: Optimizer<any>;
  /** The LR schedule (null without). */
  readonly scheduler: LRScheduler | null;
  /** Micro-batches per optimizer step (the Trainer's gradAccumulation). */
  readonly gradAccumulation: number;
  /** Clip the global gradient norm to this before the step (null: no clipping). */
  readonly clipGradNorm: number | null;
  /**
   * The forward of one micro-batch: its loss, a floating point tensor with one element (the batch
   * moved to the trainer's device, the loss function run under the trainer's autocast option).
   */
  loss(batch: unknown): Tensor;
}

/** Where a micro-batch sits in its accumulation window. */
export interface MicroBatchInfo {
  /** Its position in the window, from 0. */
  index: number;
  /**
   * Whether it is the window's last: the backward after which the gradients are complete (data
   * parallelism all-reduces then, and skips it before with noSync).
   */
  isLastMicroBatch: boolean;
}

/**
 * The parts of a training step; the Trainer calls them in order: forwardBackward for each micro-batch
 * of the window (each inside its own tidy scope), beforeStep once, step once. This default runs in one
 * process. A data-parallel or sharded strategy subclasses it (Trainer option `strategy`), overrides
 * the parts it changes and calls super for the rest, e.g. forwardBackward under noSync() unless
 * isLastMicroBatch, beforeStep waiting for the all-reduces before super.beforeStep, step as a sharded
 * optimizer step followed by an all-gather of the parameters.
 */
export class TrainStrategy<M extends Module = Module> {
  /**
   * Forward and backward of one micro-batch: backward of loss / gradAccumulation (so the window's
   * gradients are the mean over its micro-batches), accumulating into the parameters' .grad. Returns
   * the micro-batch's loss, undivided; the Trainer sums the losses on the device and reads them once
   * per logging interval, so nothing here waits for the device.
   */
  forwardBackward(ctx: StepContext<M>, batch: unknown, _info: MicroBatchInfo): Tensor {
    const loss = ctx.loss(batch);
    (ctx.gradAccumulation > 1 ? loss.div(ctx.gradAccumulation) : loss).backward();
    return loss.detach();
  }

  /**
   * After the window's last backward, before the optimizer step: clips the global gradient norm when
   * ctx.clipGradNorm is set and returns the norm before clipping (a 0-d tensor on the device), else
   * null.
   */
  beforeStep(ctx: StepContext<M>): Tensor | null {
    if (ctx.clipGradNorm == null) return null;
    return clipGradNorm(ctx.optimizer.paramGroups.flatMap((g) => g.params), ctx.clipGradNorm);
  }

  /** The optimizer step, then zeroGrad (kiln's default, setToNone), then the LR schedule's step. */
  step(ctx: StepContext<M>): void {
    ctx.optimizer.step();
    ctx.optimizer.zeroGrad();
    ctx.scheduler?.step();
  }
}
