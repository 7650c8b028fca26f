// The Trainer's data-parallel strategy: what a TrainStrategy needs to train a DistributedDataParallel
// model. Micro-batches before the last of an accumulation window run under noSync (their gradients
// add up locally; the last backward all-reduces the sum); synchronize awaits the gradient
// all-reduces; with a ZeroRedundancyOptimizer, finishStep awaits the parameter all-gather and
// beforeCheckpoint gathers the optimizer state. Rank 0 of the world writes files; checkpoints hold the
// wrapped model's weights under its own names, so they load on any world size (and in one process).
import { Module } from '../nn/module';
import { TrainStrategy } from '../train/strategy';
import type { MicroBatchInfo, StepAgreement, StepContext, StepEndInfo } from '../train/strategy';
import { noGrad } from '../autograd/grad_mode';
import { tidy } from '../memory';
import { cat } from '../ops/shape';
import type { Tensor } from '../tensor';
import { ValueError } from '../errors';
import { tensor } from '../ops/creation';
import { DistributedDataParallel } from './ddp';
import { rank } from './process_group';
import { ZeroRedundancyOptimizer } from './zero';

/**
 * Trains a DistributedDataParallel model (the Trainer picks it when its model is one; pass it as
 * `strategy` to subclass it). Works with any optimizer, and with ZeroRedundancyOptimizer.
 */
export class DataParallelStrategy<M extends Module = Module> extends TrainStrategy<M> {
  private ddp(ctx: StepContext<M>): DistributedDataParallel {
    const m: Module = ctx.model;
    if (!(m instanceof DistributedDataParallel)) {
      throw new ValueError('DataParallelStrategy', `the Trainer's model must be a dist.DistributedDataParallel, got ${m.constructor.name}`);
    }
    return m;
  }

  /** The micro-batch's forward and backward; under noSync unless it is the window's last. */
  override forwardBackward(ctx: StepContext<M>, batch: unknown, info: MicroBatchInfo): Tensor {
    if (info.isLastMicroBatch) return super.forwardBackward(ctx, batch, info);
    return this.ddp(ctx).noSync(() => super.forwardBackward(ctx, batch, info));
  }

  /** Awaits the gradient all-reduces of the window's last backward. */
  override async synchronize(ctx: StepContext<M>): Promise<void> {
    await this.ddp(ctx).synchronize();
  }

  /** With a ZeroRedundancyOptimizer: awaits the gathering of the updated parameters. */
  override async finishStep(ctx: StepContext<M>): Promise<void> {
    if (ctx.optimizer instanceof ZeroRedundancyOptimizer) await ctx.optimizer.synchronize();
  }

  /** With a ZeroRedundancyOptimizer: gathers its whole state (every rank takes part). */
  override async beforeCheckpoint(ctx: StepContext<M>): Promise<void> {
    if (ctx.optimizer instanceof ZeroRedundancyOptimizer) await ctx.optimizer.consolidateStateDict();
  }

  /** Waits for the wrapper's broadcast of rank 0's parameters. */
  override async beforeFit(ctx: StepContext<M>): Promise<void> {
    await this.ddp(ctx).ready;
  }

  /**
   * Every rank stops when any was asked to, and fails when any rank's loss was not finite: two flags
   * all-reduced (max) per step, read back in one transfer.
   */
  override async agreeAfterStep(ctx: StepContext<M>, info: StepEndInfo): Promise<StepAgreement> {
    const group = this.ddp(ctx).group;
    const flags = noGrad(() => tidy(() => cat([
      tensor([info.stopRequested ? 1 : 0], { dtype: 'int32', device: group.device }),
      // x - x is 0 for a finite x and NaN otherwise.
      info.loss ? info.loss.sub(info.loss).ne(0).reshape([1]).to({ dtype: 'int32', device: group.device }) : tensor([0], { dtype: 'int32', device: group.device }),
    ])));
    try {
      await group.allReduce(flags, { op: 'max' });
      const [stop, bad] = flags.dataSync() as Int32Array;
      return { stop: stop > 0, lossFinite: bad === 0 };
    } finally {
      flags.dispose();
    }
  }

  /** Rank 0 writes checkpoints, metrics and progress. */
  override isMainProcess(): boolean {
    return rank() === 0;
  }

  /** The wrapped model (its own parameter names, without DDP's 'module.' prefix). */
  override checkpointModule(model: M): Module {
    return model instanceof DistributedDataParallel ? model.module : model;
  }
}
