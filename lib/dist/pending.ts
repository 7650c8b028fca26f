// Collectives whose results are not in place yet. Gradients still being all-reduced:
// DistributedDataParallel registers itself between the end of a backward and `await
// ddp.synchronize()`, and Optimizer.step refuses to run meanwhile, since it would read gradients
// another thread is writing (a silent wrong step). Parameters still being gathered:
// ZeroRedundancyOptimizer registers itself between step() and `await opt.synchronize()`, and
// DistributedDataParallel's forward refuses to run meanwhile.
import { DistError } from '../errors';

const pending = new Set<object>();

/** @internal Marks owner's gradient all-reduces as in flight (true) or finished (false). */
export function markGradSyncPending(owner: object, inFlight: boolean): void {
  if (inFlight) pending.add(owner);
  else pending.delete(owner);
}

/** @internal Throws DistError when gradients are still being all-reduced. */
export function checkGradSyncDone(op: string): void {
  if (pending.size) {
    throw new DistError(op, 'gradients are still being all-reduced: `await ddp.synchronize()` after backward and before the optimizer step');
  }
}

const gathering = new Set<object>();

/** @internal Marks owner's parameter all-gathers as in flight (true) or finished (false). */
export function markParamSyncPending(owner: object, inFlight: boolean): void {
  if (inFlight) gathering.add(owner);
  else gathering.delete(owner);
}

/** @internal Throws DistError when parameters are still being gathered after a sharded optimizer step. */
export function checkParamSyncDone(op: string): void {
  if (gathering.size) {
    throw new DistError(op, 'the parameters are still being gathered after a sharded optimizer step: `await opt.synchronize()` after opt.step()');
  }
}
