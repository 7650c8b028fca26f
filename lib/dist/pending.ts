// Collectives whose results are not in place yet, per owner. Gradients still being all-reduced
// (gradSync): DistributedDataParallel between the end of a backward and `await ddp.synchronize()`;
// Optimizer.step refuses to run meanwhile, since it would read gradients another thread is writing
// (a silent wrong step). Parameters still being gathered (paramSync): ZeroRedundancyOptimizer
// between step() and `await opt.synchronize()`; DistributedDataParallel's forward refuses to run
// meanwhile.
import { DistError } from '../errors';
import type { Work } from './process_group';

/** @internal The works each owner has in flight, of one kind. */
export class InFlight {
  private readonly works = new Map<object, Work[]>();

  constructor(private readonly advice: string) {}

  /** Records one more of owner's works. */
  add(owner: object, w: Work): void {
    const list = this.works.get(owner);
    if (list) list.push(w);
    else this.works.set(owner, [w]);
  }

  /** Whether owner has works in flight. */
  has(owner: object): boolean {
    return this.works.has(owner);
  }

  /** Awaits owner's works (rejecting with the first DistError); they are forgotten either way. */
  async settle(owner: object): Promise<void> {
    const list = this.works.get(owner);
    if (!list) return;
    try {
      await Promise.all(list.map((w) => w.wait()));
    } finally {
      this.works.delete(owner);
    }
  }

  /** Forgets owner's works (a disposed owner). */
  clear(owner: object): void {
    this.works.delete(owner);
  }

  /** Throws DistError naming op while any owner has works in flight. */
  check(op: string): void {
    if (this.works.size) throw new DistError(op, this.advice);
  }
}

/** @internal Gradient all-reduces of DistributedDataParallel wrappers. */
export const gradSync = new InFlight('gradients are still being all-reduced: `await ddp.synchronize()` after backward and before the optimizer step');
/** @internal Parameter all-gathers of ZeroRedundancyOptimizers. */
export const paramSync = new InFlight('the parameters are still being gathered after a sharded optimizer step: `await opt.synchronize()` after opt.step()');
