// ZeroRedundancyOptimizer (ZeRO stage 1, torch.distributed.optim.ZeroRedundancyOptimizer): with
// data parallelism every rank holds the same averaged gradients, so each rank need only keep the
// optimizer state of, and update, its own share of the parameters; the updated parameters are then
// all-gathered. AdamW's two moment buffers, twice the parameters' size, shrink to 2/N per rank.
//
// Parameters are assigned whole, greedily to the least-loaded rank in registration order (the same
// assignment on every rank), and the rank's share is stepped by an inner optimizer of the given class
// over just those parameters. step() updates the share and starts the all-gather (one per dtype and
// device: each rank's share packed into an equal-size chunk); synchronize() waits for it and copies
// the other ranks' parameters out. The state dict is the unsharded one, as the wrapped optimizer's
// on one process would be: consolidateStateDict() gathers it (every rank calls it), loadStateDict
// takes one from any world size and keeps this rank's share.
import { enableGrad, noGrad } from '../autograd/grad_mode';
import { DistError, ValueError } from '../errors';
import { keep, tidy } from '../memory';
import { empty, zeros } from '../ops/creation';
import { BaseOptions, Optimizer, OptimizerStateDict, ParamGroup, ParamGroupInput, Params, ParamState } from '../optim/optimizer';
import { Tensor } from '../tensor';
import { gradSync, paramSync } from './pending';
import { ProcessGroup, Work, worldGroup } from './process_group';

/** An optimizer class ZeroRedundancyOptimizer can wrap (optim.AdamW, optim.Adam, optim.SGD). */
export type OptimizerClass<O extends BaseOptions> = new (params: Params<O>, opts: Partial<O>) => Optimizer<O>;

/** Options of ZeroRedundancyOptimizer: the wrapped optimizer's class and options, and the group. */
export type ZeroOptions<O extends BaseOptions> = Partial<O> & {
  /** The optimizer each rank runs over its share (e.g. optim.AdamW). */
  optimizer: OptimizerClass<O>;
  /** The data-parallel group the state is sharded over (default: the world). */
  group?: ProcessGroup;
};

/** What one rank of a ZeroRedundancyOptimizer holds. */
export interface ZeroMemoryReport {
  /** The rank in the group. */
  rank: number;
  /** Parameters it updates. */
  ownedParameters: number;
  /** Their elements. */
  ownedElements: number;
  /** Bytes of optimizer state it holds (0 before the first step). */
  stateBytes: number;
}

/** One all-gather of the parameters of one dtype and device. */
interface Gather {
  /** params[r]: rank r's parameters in this gather, in order. */
  params: Tensor[][];
  chunk: number;
  input: Tensor;
  output: Tensor;
}

/** What consolidateStateDict exchanges about each owned parameter's state: numbers, and tensors' dtype. */
type StateShape = Record<string, number | { dtype: string }>;

/**
 * ZeRO stage 1: shards the wrapped optimizer's state across the ranks of a data-parallel group.
 * Equal results to the wrapped optimizer on every rank (the same updates, computed once). Use it with
 * DistributedDataParallel, and `await zero.synchronize()` after each step (the Trainer's data-parallel
 * strategy does).
 *
 * ```ts
 * const opt = new kiln.dist.ZeroRedundancyOptimizer(ddp.parameters(), { optimizer: kiln.optim.AdamW, lr: 3e-4 });
 * loss.backward(); await ddp.synchronize(); opt.step(); await opt.synchronize(); opt.zeroGrad();
 * ```
 */
export class ZeroRedundancyOptimizer<O extends BaseOptions = BaseOptions> extends Optimizer<O> {
  /** The group the state is sharded over. */
  readonly group: ProcessGroup;
  /** The rank that updates each parameter. */
  readonly owner: ReadonlyMap<Tensor, number>;
  /** The wrapped optimizer over this rank's share (null when the rank owns no parameter). */
  readonly local: Optimizer<O> | null;
  #gathers: Gather[] = [];
  #consolidated: OptimizerStateDict | null = null;
  /** For each outer group: the local group holding its owned parameters (-1: none). */
  #localGroup: number[] = [];

  constructor(params: Params<O>, opts: ZeroOptions<O>) {
    const { optimizer: Ctor, group, ...rest } = opts ?? ({} as ZeroOptions<O>);
    const given = rest as unknown as Partial<O>;
    super(params, given as O);
    const op = 'ZeroRedundancyOptimizer';
    if (typeof Ctor !== 'function') throw new ValueError(op, 'options.optimizer must be an optimizer class, e.g. optim.AdamW');
    this.group = group ?? worldGroup();
    const size = this.group.size, me = this.group.rank;
    const all = this.paramGroups.flatMap((g) => g.params);
    const load = new Array<number>(size).fill(0);
    const owner = new Map<Tensor, number>();
    for (const p of all) {
      const r = load.indexOf(Math.min(...load));
      owner.set(p, r);
      load[r] += p.numel;
    }
    this.owner = owner;
    const localGroups: ParamGroupInput<O>[] = [];
    this.#localGroup = this.paramGroups.map((g) => {
      const mine = g.params.filter((p) => owner.get(p) === me);
      if (!mine.length) return -1;
      const { params: _all, ...options } = g as ParamGroup<O> & Record<string, unknown>;
      localGroups.push({ ...(options as Partial<O>), params: mine } as ParamGroupInput<O>);
      return localGroups.length - 1;
    });
    this.local = localGroups.length ? new Ctor(localGroups, given) : null;
    // The outer groups show the wrapped optimizer's filled-in options (what schedulers read and change).
    const defaults = this.local?.defaults ?? probeDefaults(Ctor, given, all[0]);
    (this as { defaults: Readonly<O> }).defaults = defaults;
    this.paramGroups.forEach((g, i) => {
      const j = this.#localGroup[i];
      const filled = j >= 0 ? this.local!.paramGroups[j] : { ...defaults, ...g };
      for (const [k, v] of Object.entries(filled)) if (k !== 'params') (g as unknown as Record<string, unknown>)[k] = v;
    });
    this.#gathers = this.planGathers(all, size);
  }

  protected checkOptions(_o: O): void {
    // The wrapped optimizer checks its options when it is made.
  }

  protected update(): void {
    throw new DistError('ZeroRedundancyOptimizer', 'update() is the wrapped optimizer\'s');
  }

  private planGathers(all: Tensor[], size: number): Gather[] {
    const byKind = new Map<string, Tensor[][]>();
    for (const p of all) {
      const key = `${p.dtype}@${p.device}`;
      if (!byKind.has(key)) byKind.set(key, Array.from({ length: size }, () => []));
      byKind.get(key)![this.owner.get(p)!].push(p);
    }
    return [...byKind.values()].map((params) => {
      const chunk = Math.max(...params.map((ps) => ps.reduce((n, p) => n + p.numel, 0)));
      const like = params.find((ps) => ps.length)![0];
      return {
        params, chunk,
        input: keep(zeros([chunk], { dtype: like.dtype, device: like.device })),
        output: keep(zeros([chunk * size], { dtype: like.dtype, device: like.device })),
      };
    });
  }

  /**
   * Steps this rank's share with the wrapped optimizer (after copying the groups' current options, an
   * LR schedule's changes included) and starts gathering every rank's updated parameters. Await
   * synchronize() before the parameters are used again.
   */
  override step<L>(closure?: () => L): L | undefined {
    if (paramSync.has(this)) throw new DistError('ZeroRedundancyOptimizer.step', 'the last step\'s parameters are still being gathered: `await opt.synchronize()` first');
    gradSync.check('ZeroRedundancyOptimizer.step');
    this.disposeConsolidated();
    let loss: L | undefined = closure && !this.local ? enableGrad(closure) : undefined;
    if (this.local) {
      this.paramGroups.forEach((g, i) => {
        const j = this.#localGroup[i];
        if (j < 0) return;
        for (const [k, v] of Object.entries(g)) if (k !== 'params') (this.local!.paramGroups[j] as unknown as Record<string, unknown>)[k] = v;
      });
      loss = this.local.step(closure);
    }
    const me = this.group.rank;
    noGrad(() => {
      for (const g of this.#gathers) {
        let at = 0;
        tidy(() => {
          for (const p of g.params[me]) {
            g.input.narrow(0, at, p.numel).copy_(p.reshape([-1]));
            at += p.numel;
          }
        });
        paramSync.add(this, this.group.allGather(g.output, g.input));
      }
    });
    return loss;
  }

  /** Waits for the parameter all-gather the last step started and copies the other ranks' parameters in. */
  async synchronize(): Promise<void> {
    if (!paramSync.has(this)) return;
    await paramSync.settle(this);
    const me = this.group.rank;
    noGrad(() => tidy(() => {
      for (const g of this.#gathers) {
        g.params.forEach((ps, r) => {
          if (r === me) return;
          let at = r * g.chunk;
          for (const p of ps) {
            p.copy_(g.output.narrow(0, at, p.numel).reshape(p.shape));
            at += p.numel;
          }
        });
      }
    }));
  }

  /** Bytes of optimizer state this rank holds, and the parameters it updates. */
  memoryReport(): ZeroMemoryReport {
    let stateBytes = 0;
    for (const s of this.local?.state.values() ?? []) {
      for (const v of Object.values(s)) if (v instanceof Tensor) stateBytes += v.numel * v.itemsize;
    }
    const owned = [...this.owner].filter(([, r]) => r === this.group.rank).map(([p]) => p);
    return { rank: this.group.rank, ownedParameters: owned.length, ownedElements: owned.reduce((n, p) => n + p.numel, 0), stateBytes };
  }

  /**
   * Gathers the whole (unsharded) state onto every rank, so that stateDict() returns it; every rank of
   * the group must call it. The Trainer's data-parallel strategy does before each checkpoint.
   */
  async consolidateStateDict(): Promise<void> {
    const all = this.paramGroups.flatMap((g) => g.params);
    const index = new Map(all.map((p, i) => [p, i] as const));
    const localParams = this.local ? this.local.paramGroups.flatMap((g) => g.params) : [];
    const mine: Record<number, StateShape> = {};
    const localSd = this.local?.stateDict();
    localParams.forEach((p, k) => {
      const s = localSd!.state[k];
      if (!s) return;
      mine[index.get(p)!] = Object.fromEntries(Object.entries(s).map(([key, v]) => [key, v instanceof Tensor ? { dtype: v.dtype } : v]));
    });
    const shapes = (await this.group.allGatherObject(mine)) as Array<Record<string, StateShape>>;
    const state: Record<number, ParamState> = {};
    const works: Work[] = [];
    const made: Tensor[] = [];
    try {
      noGrad(() => {
        all.forEach((p, i) => {
          const r = this.owner.get(p)!;
          const shape = shapes[r][i];
          if (!shape) return;
          const own = r === this.group.rank ? localSd!.state[localParams.indexOf(p)] : null;
          const entry: ParamState = {};
          for (const [key, v] of Object.entries(shape)) {
            if (typeof v === 'number') {
              entry[key] = v;
              continue;
            }
            const t = keep(own ? (own[key] as Tensor).clone() : empty(p.shape, { dtype: v.dtype as Tensor['dtype'], device: p.device }));
            made.push(t);
            works.push(this.group.broadcast(t, r));
            entry[key] = t;
          }
          state[i] = entry;
        });
      });
      await Promise.all(works.map((w) => w.wait()));
    } catch (e) {
      for (const t of made) t.dispose();
      throw e;
    }
    this.disposeConsolidated();
    let next = 0;
    const paramGroups = this.paramGroups.map((g) => {
      const out: Record<string, unknown> & { params: number[] } = { params: g.params.map(() => next++) };
      for (const [k, v] of Object.entries(g)) if (k !== 'params') out[k] = Array.isArray(v) ? [...v] : v;
      return out;
    });
    this.#consolidated = { state, paramGroups };
  }

  /**
   * The unsharded state, as the wrapped optimizer on one process would have it: available after
   * consolidateStateDict() (until the next step), or at once in a group of one.
   */
  override stateDict(): OptimizerStateDict {
    if (this.#consolidated) return this.#consolidated;
    if (this.group.size === 1 && this.local) {
      const sd = this.local.stateDict();
      const { paramGroups } = super.stateDict();
      return { state: sd.state, paramGroups };
    }
    throw new DistError('ZeroRedundancyOptimizer.stateDict', 'the state is sharded: `await opt.consolidateStateDict()` on every rank first');
  }

  /**
   * Loads an unsharded state (from the wrapped optimizer, or consolidated on any world size): the
   * groups' options, and this rank's share of the per-parameter state.
   */
  override loadStateDict(sd: OptimizerStateDict): void {
    const op = 'ZeroRedundancyOptimizer.loadStateDict';
    if (!sd || typeof sd !== 'object' || !Array.isArray(sd.paramGroups) || typeof sd.state !== 'object' || sd.state === null) {
      throw new ValueError(op, 'expected {state, paramGroups}');
    }
    if (sd.paramGroups.length !== this.paramGroups.length) {
      throw new ValueError(op, `the state has ${sd.paramGroups.length} parameter groups, the optimizer ${this.paramGroups.length}`);
    }
    const me = this.group.rank;
    const localState: Record<number, ParamState> = {};
    const localGroups: Array<Record<string, unknown> & { params: number[] }> = [];
    let nextLocal = 0;
    sd.paramGroups.forEach((g, i) => {
      const own = this.paramGroups[i];
      if (!g || !Array.isArray(g.params) || g.params.length !== own.params.length) {
        throw new ValueError(op, `group ${i} has ${Array.isArray(g?.params) ? g.params.length : 'no'} parameters in the state, ${own.params.length} in the optimizer`);
      }
      const { params: saved, ...options } = g as Record<string, unknown> & { params: number[] };
      if (this.#localGroup[i] < 0) return;
      const ids: number[] = [];
      own.params.forEach((p, k) => {
        if (this.owner.get(p) !== me) return;
        const s = sd.state[saved[k]];
        if (s) localState[nextLocal] = s;
        ids.push(nextLocal++);
      });
      localGroups.push({ ...options, params: ids });
    });
    this.local?.loadStateDict({ state: localState, paramGroups: localGroups });
    sd.paramGroups.forEach((g, i) => {
      for (const [k, v] of Object.entries(g)) if (k !== 'params') (this.paramGroups[i] as unknown as Record<string, unknown>)[k] = Array.isArray(v) ? [...v] : v;
    });
    this.disposeConsolidated();
  }

  /** Frees the wrapped optimizer's state, the gather buffers and any consolidated state. */
  override dispose(): void {
    this.local?.dispose();
    for (const g of this.#gathers) {
      g.input.dispose();
      g.output.dispose();
    }
    this.#gathers = [];
    this.disposeConsolidated();
    paramSync.clear(this);
    super.dispose();
  }

  private disposeConsolidated(): void {
    if (!this.#consolidated) return;
    for (const s of Object.values(this.#consolidated.state)) for (const v of Object.values(s)) if (v instanceof Tensor) v.dispose();
    this.#consolidated = null;
  }
}

/** The wrapped class's filled-in defaults, from an instance over a one-element stand-in parameter. */
function probeDefaults<O extends BaseOptions>(Ctor: OptimizerClass<O>, given: Partial<O>, like: Tensor): O {
  const stand = zeros([1], { dtype: like.dtype, device: like.device }).requiresGrad_();
  try {
    return { ...new Ctor([stand], given).defaults };
  } finally {
    stand.dispose();
  }
}
