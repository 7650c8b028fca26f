// DistributedDataParallel: every rank holds the whole model and trains on its own part of the
// batch; gradients are averaged across ranks during backward, so every rank takes the same step.
//
// Gradients live in flat buckets (about bucketCapMB each, the first 1 MiB so communication starts
// early; parameters in reverse registration order, roughly the order backward produces them, one
// dtype per bucket): each parameter's .grad is a view of its bucket, so the engine accumulates into
// the bucket directly. A post-accumulate hook marks a parameter ready; when every parameter of a
// bucket is, the bucket's all-reduce (avg) starts on the process group's thread while backward goes
// on computing the next gradients. Buckets start strictly in index order, the same on every rank, as
// collectives must. At the end of backward (an engine callback) the parameters that got no gradient
// are either marked ready with zeros (findUnusedParameters) or named in a DistError. The caller then
// awaits synchronize() before the optimizer step; Optimizer.step refuses to run while gradients are
// in flight.
//
// A .grad replaced behind DDP's back (zeroGrad with setToNone, the default) is copied into the bucket
// at its next hook and .grad becomes a bucket view again, so either zeroGrad works; zeroGrad(false)
// saves that copy.
import { queueBackwardCallback } from '../autograd/engine';
import { noGrad } from '../autograd/grad_mode';
import { DistError, ValueError } from '../errors';
import { keep } from '../memory';
import { Module, Parameter } from '../nn/module';
import { tensor, zeros } from '../ops/creation';
import { Tensor } from '../tensor';
import type { HookHandle } from '../tensor';
import { gradSync, paramSync } from './pending';
import { ProcessGroup, worldGroup } from './process_group';

/** Options of DistributedDataParallel. */
export interface DDPOptions {
  /** Bytes of gradients per bucket, in MiB (default 25, torch's); the first bucket holds at most 1 MiB. */
  bucketCapMB?: number;
  /**
   * Allow parameters that get no gradient in a backward (branches not taken, frozen heads): they count
   * as zeros in the average. Without it such a backward throws a DistError naming them (default false).
   */
  findUnusedParameters?: boolean;
  /** The group to average over (default: the world). */
  group?: ProcessGroup;
  /** Broadcast the module's buffers from rank 0 at construction, as its parameters are (default true). */
  broadcastBuffers?: boolean;
}

interface Slot {
  param: Parameter;
  name: string;
  bucket: Bucket;
  offset: number;
  /** The .grad view DDP handed out last (null before the first). */
  view: Tensor | null;
  /** Whether the hook has fired in the current synced backward. */
  ready: boolean;
}

interface Bucket {
  flat: Tensor;
  slots: Slot[];
  readyCount: number;
}

const FIRST_BUCKET_BYTES = 1 << 20;

/** One gradient bucket of a DistributedDataParallel. */
export interface BucketInfo {
  /** Its parameters' names, in their order in the bucket. */
  params: string[];
  /** Its size in elements. */
  numel: number;
  /** The dtype of its parameters. */
  dtype: string;
}

/**
 * Wraps a module for data-parallel training (torch.nn.parallel.DistributedDataParallel): parameters
 * and buffers are broadcast from rank 0 when it is made (await `ready` before the first forward), and
 * gradients are averaged across ranks during backward. Like torch's, it is a Module whose child
 * `module` is the wrapped model (so its stateDict keys start with 'module.'; the Trainer saves the
 * wrapped model's own keys, so checkpoints load on any world size).
 *
 * ```ts
 * await kiln.dist.initProcessGroup();
 * const ddp = new kiln.dist.DistributedDataParallel(model);
 * await ddp.ready;
 * const opt = new kiln.optim.AdamW(ddp.parameters(), { lr: 1e-3 });
 * for (const [x, y] of loader) {
 *   nn.crossEntropy(ddp.forward(x), y).backward();
 *   await ddp.synchronize();                 // gradients averaged over the ranks
 *   opt.step();
 *   opt.zeroGrad();
 * }
 * ```
 */
export class DistributedDataParallel<M extends Module = Module> extends Module {
  /** The wrapped model. */
  readonly module: M;
  /** Resolves once rank 0's parameters and buffers are in place (rejects when the ranks' models differ). */
  readonly ready: Promise<void>;
  /** Whether backward all-reduces gradients (noSync turns it off for its callback). */
  requireGradSync = true;
  /** The group gradients are averaged over. */
  readonly group: ProcessGroup;
  /** Whether unused parameters count as zero gradients instead of an error. */
  readonly findUnusedParameters: boolean;
  #buckets: Bucket[] = [];
  #slots = new Map<Parameter, Slot>();
  #nextLaunch = 0;
  #backwardQueued = false;
  #isReady = false;
  #failed: Error | null = null;
  #hooks: HookHandle[] = [];

  constructor(module: M, opts: DDPOptions = {}) {
    super();
    const op = 'DistributedDataParallel';
    if (!(module instanceof Module)) throw new ValueError(op, 'expected a Module to wrap');
    const capMB = opts.bucketCapMB ?? 25;
    if (!(capMB > 0) || !Number.isFinite(capMB)) throw new ValueError(op, `bucketCapMB must be a positive number, got ${capMB}`);
    this.module = module;
    this.group = opts.group ?? worldGroup();
    this.findUnusedParameters = opts.findUnusedParameters ?? false;
    const named = module.namedParameters();
    const wantCuda = this.group.backend === 'nccl';
    for (const [name, p] of named) {
      if ((p._dev >= 0) !== wantCuda) {
        throw new ValueError(op, `parameter ${name} is on ${p.device}, but the group's ${this.group.backend} backend takes ${wantCuda ? 'CUDA' : 'CPU'} tensors; move the model first`);
      }
    }
    this.buildBuckets(named.filter(([, p]) => p.requiresGrad), capMB * 2 ** 20);
    this.ready = this.syncModule(named.map(([, p]) => p), opts.broadcastBuffers ?? true ? module.buffers() : []);
    this.ready.then(() => (this.#isReady = true), (e: Error) => (this.#failed = e));
    for (const slot of this.#slots.values()) this.#hooks.push(slot.param.registerPostAccumulateGradHook(() => this.onGradReady(slot)));
  }

  /** Runs the wrapped module's forward (after checking that the broadcast is done and no all-reduce is pending). */
  override forward(...args: Parameters<M['forward']>): ReturnType<M['forward']> {
    const op = 'DistributedDataParallel.forward';
    if (this.#failed) throw this.#failed;
    if (!this.#isReady) throw new DistError(op, 'the parameters are still being broadcast from rank 0: `await ddp.ready` before the first forward');
    if (gradSync.has(this)) throw new DistError(op, 'the last backward\'s gradients are still being all-reduced: `await ddp.synchronize()` before the next forward');
    paramSync.check(op);
    return this.module.forward(...args) as ReturnType<M['forward']>;
  }

  /**
   * Runs fn with gradient synchronization off (gradient accumulation: the backwards in fn add to the
   * local gradients; the next synced backward averages the sum). Returns fn's result.
   */
  noSync<T>(fn: () => T): T {
    const before = this.requireGradSync;
    this.requireGradSync = false;
    try {
      return fn();
    } finally {
      this.requireGradSync = before;
    }
  }

  /**
   * Waits for the gradient all-reduces the last backward started; afterwards every rank's .grad holds
   * the average over the ranks. Rejects with the collective's DistError. Resolves at once when nothing
   * is in flight (a noSync backward).
   */
  async synchronize(): Promise<void> {
    await gradSync.settle(this);
  }

  /** The buckets' layout, in launch order (for tests and tuning). */
  bucketLayout(): BucketInfo[] {
    return this.#buckets.map((b) => ({ params: b.slots.map((s) => s.name), numel: b.flat.numel, dtype: b.flat.dtype }));
  }

  override extraRepr(): string {
    return `world ${this.group.size}, ${this.#buckets.length} buckets${this.findUnusedParameters ? ', findUnusedParameters' : ''}`;
  }

  /** Frees the buckets (the parameters' .grad views with them) and the wrapped module. */
  override dispose(): void {
    for (const h of this.#hooks) h.remove();
    this.#hooks = [];
    for (const s of this.#slots.values()) {
      if (s.param.grad && s.param.grad === s.view) s.param.grad = null;
      s.view?.dispose();
    }
    for (const b of this.#buckets) b.flat.dispose();
    this.#buckets = [];
    this.#slots.clear();
    gradSync.clear(this);
    super.dispose();
  }

  private buildBuckets(named: Array<[string, Parameter]>, cap: number): void {
    const open = new Map<string, { slots: Array<[string, Parameter]>; bytes: number }>();
    const close = (key: string) => {
      const b = open.get(key);
      if (!b || !b.slots.length) return;
      open.delete(key);
      const numel = b.slots.reduce((n, [, p]) => n + p.numel, 0);
      const first = b.slots[0][1];
      const flat = keep(zeros([numel], { dtype: first.dtype, device: first.device }));
      const bucket: Bucket = { flat, slots: [], readyCount: 0 };
      let offset = 0;
      for (const [name, param] of b.slots) {
        const slot: Slot = { param, name, bucket, offset, view: null, ready: false };
        bucket.slots.push(slot);
        this.#slots.set(param, slot);
        offset += param.numel;
      }
      this.#buckets.push(bucket);
    };
    for (const [name, p] of [...named].reverse()) {
      const key = `${p.dtype}@${p.device}`;
      const b = open.get(key) ?? { slots: [], bytes: 0 };
      open.set(key, b);
      b.slots.push([name, p]);
      b.bytes += p.numel * p.itemsize;
      if (b.bytes >= (this.#buckets.length === 0 ? Math.min(cap, FIRST_BUCKET_BYTES) : cap)) close(key);
    }
    for (const key of [...open.keys()]) close(key);
    // Gradients the parameters already have move into their buckets.
    noGrad(() => {
      for (const s of this.#slots.values()) if (s.param.grad) this.repoint(s);
    });
  }

  /**
   * Checks that every rank wraps the same parameter shapes (an all-gather of a fingerprint), then
   * broadcasts rank 0's parameters and buffers. All collectives are issued now, in one order on
   * every rank; only the waiting is deferred.
   */
  private async syncModule(params: Parameter[], buffers: Tensor[]): Promise<void> {
    const g = this.group;
    let hash = 0;
    for (const p of params) for (const d of [...p.shape, p.requiresGrad ? -1 : -2]) hash = (Math.imul(hash, 31) + d) | 0;
    const mine = tensor([params.length, params.reduce((n, p) => n + p.numel, 0), hash], { dtype: 'int64', device: params[0]?.device ?? 'cpu' });
    const all = zeros([g.size * 3], { dtype: 'int64', device: mine.device });
    const check = g.allGather(all, mine);
    const works = noGrad(() => [...params, ...buffers].map((t) => g.broadcast(t, 0)));
    try {
      await check;
      const v = all.dataSync() as BigInt64Array;
      for (let r = 1; r < g.size; r++) {
        if (v[3 * r] !== v[0] || v[3 * r + 1] !== v[1] || v[3 * r + 2] !== v[2]) {
          throw new DistError('DistributedDataParallel', `rank ${g.ranks[r]}'s model has ${v[3 * r]} parameters with ${v[3 * r + 1]} elements, rank ${g.ranks[0]}'s has ${v[0]} with ${v[1]}${v[3 * r] === v[0] && v[3 * r + 1] === v[1] ? ' (shapes or requiresGrad differ)' : ''}: every rank must build the same model`);
        }
      }
      await Promise.all(works.map((w) => w.wait()));
    } finally {
      mine.dispose();
      all.dispose();
    }
  }

  /** Makes slot's parameter's .grad a view of its bucket again, moving any gradient it holds there. */
  private repoint(s: Slot): void {
    const g = s.param.grad;
    if (g && g === s.view && !g.isDisposed) return;
    const flatView = s.bucket.flat.narrow(0, s.offset, s.param.numel);
    const view = keep(flatView.view(s.param.shape));
    flatView.dispose();
    if (g && !g.isDisposed) {
      view.copy_(g);
      g.dispose();
    } else {
      view.zero_();
    }
    s.view = view;
    s.param.grad = view;
  }

  /**
   * A backward that reaches the buckets while the last one's all-reduces are in flight (a second
   * backward of a retained graph, without `await ddp.synchronize()` between) has just added into a
   * bucket the group's thread is reading: the averages are wrong, so the wrapper fails. (Checking
   * before accumulation would need a gradient hook per parameter, which makes the engine copy every
   * gradient.)
   */
  private checkNotInFlight(): void {
    if (this.#failed) throw this.#failed;
    if (gradSync.has(this) && !this.#backwardQueued) {
      this.#failed = new DistError('DistributedDataParallel', 'a backward added gradients while the last one\'s were still being all-reduced: `await ddp.synchronize()` after each synced backward; the averages are wrong, so this wrapper cannot be used again');
      throw this.#failed;
    }
  }

  private onGradReady(s: Slot): void {
    this.checkNotInFlight();
    this.repoint(s);
    if (!this.requireGradSync || s.ready) return;
    if (!this.#backwardQueued) {
      this.#backwardQueued = true;
      queueBackwardCallback((completed) => (completed ? this.endOfBackward() : this.abortBackward()));
    }
    s.ready = true;
    if (++s.bucket.readyCount === s.bucket.slots.length) this.launchReady();
  }

  /** Starts the buckets that are complete, in index order. */
  private launchReady(): void {
    while (this.#nextLaunch < this.#buckets.length) {
      const b = this.#buckets[this.#nextLaunch];
      if (b.readyCount < b.slots.length) return;
      gradSync.add(this, this.group.allReduce(b.flat, { op: 'avg' }));
      this.#nextLaunch++;
    }
  }

  /**
   * A backward that threw after some gradients arrived: its per-backward state is reset. When some
   * buckets were already all-reducing, this rank's collectives no longer line up with the other
   * ranks' (they will issue the rest), so the wrapper is failed: its next use throws.
   */
  private abortBackward(): void {
    this.#backwardQueued = false;
    this.failIfOutOfStep('a backward failed');
    this.resetReadiness();
  }

  /**
   * After a backward that did not launch every bucket: other ranks may have launched theirs, so the
   * ranks' collectives may no longer line up, and equal-size buckets would then average the wrong
   * gradients silently: the wrapper fails (alone in its group, it stays usable).
   */
  private failIfOutOfStep(what: string): void {
    if (this.group.size === 1) return;
    this.#failed = new DistError('DistributedDataParallel', `${what} after ${this.#nextLaunch} of ${this.#buckets.length} gradient buckets had started their all-reduce; the ranks' collectives may no longer line up, so this wrapper cannot be used again`);
  }

  private resetReadiness(): void {
    for (const b of this.#buckets) {
      b.readyCount = 0;
      for (const s of b.slots) s.ready = false;
    }
    this.#nextLaunch = 0;
  }

  private endOfBackward(): void {
    this.#backwardQueued = false;
    const missing = this.#buckets.flatMap((b) => b.slots.filter((s) => !s.ready));
    try {
      if (missing.length && !this.findUnusedParameters) {
        const names = missing.slice(0, 8).map((s) => s.name).join(', ') + (missing.length > 8 ? `, ... (${missing.length} in all)` : '');
        this.failIfOutOfStep('parameters got no gradient');
        throw new DistError('DistributedDataParallel', `parameters that require grad got no gradient in this backward: ${names}. Pass findUnusedParameters: true when some parameters are not used in every step (or freeze them before wrapping)`);
      }
      noGrad(() => {
        for (const s of missing) {
          this.repoint(s);
          s.ready = true;
          s.bucket.readyCount++;
        }
      });
      this.launchReady();
    } finally {
      this.resetReadiness();
    }
  }
}
