// How the Trainer runs one optimizer step, in the parts a distributed strategy wraps: forwardBackward
// (one micro-batch; told whether it is the last of the accumulation window), synchronize (after the
// window's last backward: where data parallelism waits for its gradient all-reduces), beforeStep
// (clipping), step (the optimizer, the LR schedule, zeroGrad) and finishStep (where a sharded
// optimizer waits for its parameters). Also which process writes files (isMainProcess), which module a
// checkpoint holds (checkpointModule) and what must happen before one is written (beforeCheckpoint).
// The default TrainStrategy is single-process training; subclasses override a part and call super
// for the rest. The synchronous parts run inside tidy scopes; the async ones must create no tensors
// that outlive them.
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

/** What agreeAfterStep is told about this process's step. */
export interface StepEndInfo {
  /** Whether this process was asked to stop (Trainer.stop()). */
  stopRequested: boolean;
  /**
   * The step's mean loss, on the device (null before the first step, when fit() asks whether a stop
   * came in onFitStart). Valid during the call.
   */
  loss: Tensor | null;
}

/** What every process agreed on after a step. */
export interface StepAgreement {
  /** Whether the run stops after this step. */
  stop: boolean;
  /** false when some process's loss was not finite; undefined when not checked here. */
  lossFinite?: boolean;
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
 * of the window (each inside its own tidy scope), then awaits synchronize, then beforeStep and step
 * (each in a tidy scope), then awaits finishStep. This default runs in one process. A data-parallel or
 * sharded strategy (dist.DataParallelStrategy) subclasses it, overrides the parts it changes and calls
 * super for the rest: forwardBackward under noSync() unless isLastMicroBatch, synchronize awaiting the
 * all-reduces, finishStep awaiting a sharded optimizer's parameters.
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

  /**
   * After the window's last forwardBackward, before beforeStep: data parallelism awaits its gradient
   * all-reduces here. Nothing to wait for in one process.
   */
  synchronize(_ctx: StepContext<M>): void | Promise<void> {}

  /** After step: a sharded optimizer awaits the gathering of its updated parameters here. */
  finishStep(_ctx: StepContext<M>): void | Promise<void> {}

  /** Before a checkpoint is written (on every process): a sharded optimizer gathers its state here. */
  beforeCheckpoint(_ctx: StepContext<M>): void | Promise<void> {}

  /** Before the first step of fit() (after a resume): data parallelism waits for its initial broadcast. */
  beforeFit(_ctx: StepContext<M>): void | Promise<void> {}

  /**
   * After each step (and once before the first): whether the run stops now, given whether this
   * process was asked to (stop(), a signal), and whether the step's loss was finite everywhere. One
   * process answers without reading anything (lossFinite undefined: the Trainer checks the loss when
   * it reads it). Data parallelism makes every rank agree, so that all stop, or all fail on a
   * non-finite loss, at the same step and no rank is left waiting in a collective the others never
   * join.
   */
  agreeAfterStep(_ctx: StepContext<M>, info: StepEndInfo): StepAgreement | Promise<StepAgreement> {
    return { stop: info.stopRequested };
  }

  /** Whether this process writes checkpoints, metrics, the loss curve and progress (rank 0's job). */
  isMainProcess(): boolean {
    return true;
  }

  /** The module whose weights checkpoints hold (a data-parallel wrapper saves the model it wraps). */
  checkpointModule(model: M): Module {
    return model;
  }
}
