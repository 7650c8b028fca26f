// The Optimizer base class: parameter groups with per-group options over defaults, zeroGrad, step
// (under noGrad: one fused native update per parameter, or per group for optimizers with a
// multi-tensor path), device-side learning rates and step counts for capturable optimizers (syncLr),
// per-parameter state (addressable one
// parameter at a time, and optionally laid out in one flat buffer per state kind and group, which a
// sharded optimizer splits by ranges), and stateDict / loadStateDict in PyTorch's layout (state by
// parameter index, groups with their options) so that a run resumes exactly. A loaded state is
// checked as strictly as options given in code: a state read from a damaged or foreign file is an
// error naming the entry, never moments silently reset or an lr of NaN.
//
// bfloat16 and float16 parameters are updated in float32 (native/ops/optim.h): their state tensors
// are float32 (torch keeps them in the parameter's dtype; float32 moments keep small updates from
// vanishing in rounding), and only each new parameter value is rounded to the parameter's dtype.
import { gradSync } from '../dist/pending';
import { enableGrad, noGrad } from '../autograd/grad_mode';
import { DType, isFloating } from '../dtype';
import type { Device } from '../device';
import { DTypeError, KilnError, ShapeError, ValueError } from '../errors';
import { keep } from '../memory';
import { contiguousCopy, zeros } from '../ops/creation';
import { stateDType } from '../ops/optim';
import { contiguousStrides, sameShape, shapeStr } from '../shape';
import { Tensor } from '../tensor';

/** Options every optimizer has; each optimizer adds its own. */
export interface BaseOptions {
  /** Learning rate (schedulers change it per group as they step). */
  lr: number;
  /** Set by the first LR scheduler attached to the optimizer: the lr its schedule scales. */
  initialLr?: number;
}

/**
 * How SGD, Adam and AdamW run a step (not what it computes); per group like every option, and kept
 * by loadStateDict from the loading optimizer.
 */
export interface ExecutionOptions {
  /**
   * Update the group's parameters with one multi-tensor native call per device and dtype ("foreach",
   * PyTorch's name) instead of one call per parameter; the results are the same bit for bit. Default
   * true.
   */
  foreach: boolean;
  /**
   * Keep the group's learning rate in a device tensor (refreshed by `syncLr()`, which `step()` calls)
   * and, for Adam/AdamW, each parameter's step count in a device tensor the kernel advances, so that
   * no host value changes from step to step and a step can be captured into a CUDA graph and replayed
   * (PyTorch's capturable). Every parameter to be stepped takes its first step (which creates its
   * state) outside any capture; the caller runs `syncLr()` just before capturing (so that the captured
   * `step()` finds nothing to write) and before each replay, after the LR scheduler's step. Equal to
   * the host path within float32 rounding (the bias corrections come from the device count). Default
   * false.
   */
  capturable: boolean;
}

/** A parameter group as passed in: its parameters and any options that differ from the defaults. */
export type ParamGroupInput<O> = Partial<O> & {
  /** The group's parameters. */
  params: Iterable<Tensor>;
};
/** A parameter group as the optimizer holds it: every option filled in. */
export type ParamGroup<O> = O & {
  /** The group's parameters. */
  params: Tensor[];
};
/** Parameters (e.g. model.parameters()) or a list of parameter groups. */
export type Params<O> = Iterable<Tensor> | Iterable<ParamGroupInput<O>>;

/** One parameter's optimizer state: tensors (moment estimates, momentum) and numbers (step). */
export type ParamState = Record<string, Tensor | number>;

/**
 * The entries of a parameter's state once it has taken a step: 'step' is a count of steps (an integer
 * >= 0), 'tensor' a floating point tensor shaped like the parameter.
 */
export type StateSpec = Record<string, 'step' | 'tensor'>;

/** The serializable state of an optimizer (PyTorch's layout, camelCase keys). */
export interface OptimizerStateDict {
  /** Per-parameter state keyed by the parameter's index, counting through the groups in order. */
  state: Record<number, ParamState>;
  /** Each group's options, with `params` replaced by the parameters' indices. */
  paramGroups: Array<
    Record<string, unknown> & {
      /** The indices of the group's parameters. */
      params: number[];
    }
  >;
}

/**
 * Where one parameter's state sits in its group's flat state buffers: elements [offset, offset +
 * numel) of each buffer, in the parameter's row-major order.
 */
export interface FlatRange {
  /** The parameter. */
  param: Tensor;
  /** Its first element in every buffer of the group (a multiple of 16). */
  offset: number;
  /** Its number of elements. */
  numel: number;
}

/**
 * A parameter group's state laid out flat (Optimizer.useFlatState): one 1-d buffer per kind of state
 * tensor, holding every parameter's entry of that kind at the parameter's range, so that a sharded
 * optimizer (ZeRO-1) can own, update and communicate a contiguous range of each buffer across many
 * parameters. The per-parameter state tensors are views of these buffers.
 */
export interface FlatState {
  /**
   * One buffer per kind ('expAvg', 'expAvgSq', 'momentumBuffer', ...), each of `numel` elements; a kind
   * appears when the first parameter needs it (its first step, or loaded state). The optimizer's own
   * tensors, not copies.
   */
  buffers: Record<string, Tensor>;
  /** Each parameter's range, in the group's order; ranges start 16-element aligned and never overlap. */
  ranges: FlatRange[];
  /** Elements of each buffer (the last range's end, rounded up to 16). */
  numel: number;
}

/**
 * Elements each parameter's range in a flat buffer starts at a multiple of: 64 bytes of float32 state,
 * so the update kernels' 16-byte vector accesses stay aligned for every dtype.
 */
const FLAT_ALIGN = 16;

/** The flat buffers of one group: fixed ranges, a buffer per state kind made on first use. */
class FlatLayout {
  readonly ranges: FlatRange[];
  readonly numel: number;
  readonly buffers = new Map<string, Tensor>();
  private readonly at = new Map<Tensor, FlatRange>();

  constructor(params: readonly Tensor[], readonly dtype: DType, readonly device: Device) {
    let offset = 0;
    this.ranges = params.map((param) => {
      const r = { param, offset, numel: param.numel };
      offset += Math.ceil(param.numel / FLAT_ALIGN) * FLAT_ALIGN;
      return r;
    });
    this.numel = offset;
    for (const r of this.ranges) this.at.set(r.param, r);
  }

  /** A zeroed view of p's range of the kind's buffer, shaped like p and kept out of every tidy scope. */
  view(p: Tensor, kind: string): Tensor {
    let buf = this.buffers.get(kind);
    if (!buf) {
      buf = keep(zeros([this.numel], { dtype: this.dtype, device: this.device }));
      this.buffers.set(kind, buf);
    }
    const r = this.at.get(p)!;
    return keep(buf._viewAs(p.shape, contiguousStrides(p.shape), buf.offset + r.offset)).zero_();
  }

  dispose(): void {
    for (const b of this.buffers.values()) b.dispose();
    this.buffers.clear();
  }
}

function cloneOption(v: unknown): unknown {
  return Array.isArray(v) ? [...v] : v;
}

/**
 * Base class of kiln's optimizers. Subclasses give their defaults, validate options and update one
 * parameter in place from its gradient (`update`).
 */
export abstract class Optimizer<O extends BaseOptions = BaseOptions> {
  /** The options a group takes when it does not set its own. */
  readonly defaults: Readonly<O>;
  /** The parameter groups with their options; change a group's lr here (as schedulers do). */
  readonly paramGroups: ParamGroup<O>[] = [];
  /** Per-parameter state, created on the parameter's first step. */
  readonly state = new Map<Tensor, ParamState>();
  /** The group of each parameter. */
  private readonly groupOf = new Map<Tensor, ParamGroup<O>>();
  /** The flat layouts of the groups that keep their state flat (useFlatState). */
  private readonly layouts = new Map<ParamGroup<O>, FlatLayout>();

  constructor(params: Params<O>, defaults: O) {
    this.defaults = defaults;
    const items = [...(params as Iterable<Tensor | ParamGroupInput<O>>)];
    if (items.length === 0) throw new ValueError(this.constructor.name, 'optimizer got an empty parameter list');
    if (items.every((x) => x instanceof Tensor)) {
      this.addParamGroup({ params: items as Tensor[] } as unknown as ParamGroupInput<O>);
    } else if (items.every((x) => !(x instanceof Tensor) && typeof x === 'object' && x !== null && 'params' in x)) {
      for (const g of items as ParamGroupInput<O>[]) this.addParamGroup(g);
    } else {
      throw new ValueError(this.constructor.name, 'params must be tensors or parameter groups ({params, ...options}), not a mix');
    }
  }

  /** Checks one group's filled-in options; throws ValueError naming the bad option. */
  protected abstract checkOptions(o: O): void;

  /**
   * What a parameter's state holds under group's options once it has stepped; loadStateDict accepts a
   * state that is empty (the parameter never stepped) or holds exactly these entries. null, the
   * default for optimizers that do not say, checks only that numbers are finite and tensors fit.
   */
  protected stateSpec(_group: ParamGroup<O>): StateSpec | null {
    return null;
  }

  /** checkOptions and the option the base class adds. */
  private checkGroup(o: O): void {
    this.checkOptions(o);
    if (o.initialLr !== undefined) checkNumber(this.constructor.name, 'initialLr', o.initialLr);
  }

  /**
   * Updates param in place from grad (both contiguous), filling in or advancing its state (an empty
   * object on the parameter's first step, already stored, so nothing leaks when the update throws).
   */
  protected abstract update(param: Tensor, grad: Tensor, group: ParamGroup<O>, state: ParamState): void;

  /**
   * Whether step() updates group's parameters together through updateMany (a multi-tensor or
   * capturable step) instead of one update() each: its ExecutionOptions say so (optimizers without
   * them have no multi-tensor path).
   */
  protected multiTensor(group: ParamGroup<O>): boolean {
    const e = group as Partial<ExecutionOptions>;
    return !!(e.foreach || e.capturable);
  }

  /**
   * Whether group is capturable: its learning rate lives in a device tensor (lrTensor, refreshed by
   * syncLr) and its step counts in device tensors the kernels advance (stepCount), so that no host
   * value changes from one step to the next.
   */
  protected capturable(group: ParamGroup<O>): boolean {
    return !!(group as Partial<ExecutionOptions>).capturable;
  }

  /**
   * Updates params[i] in place from grads[i] (all contiguous) with states[i], as update() does for
   * one, for the parameters of group that have gradients (multiTensor(group) is true).
   */
  protected updateMany(_params: Tensor[], _grads: Tensor[], _group: ParamGroup<O>, _states: ParamState[]): void {
    throw new ValueError(`${this.constructor.name}.step`, 'this optimizer has no multi-tensor update');
  }

  /** Adds a group of parameters with its own options (missing options take the defaults). */
  addParamGroup(group: ParamGroupInput<O>): void {
    const op = `${this.constructor.name}.addParamGroup`;
    if (group === null || typeof group !== 'object' || !group.params || typeof (group.params as Iterable<Tensor>)[Symbol.iterator] !== 'function') {
      throw new ValueError(op, 'a parameter group needs `params`, an iterable of tensors');
    }
    const params = group.params instanceof Tensor ? [group.params] : [...group.params];
    if (params.length === 0) throw new ValueError(op, 'a parameter group has no parameters');
    const seen = new Set<Tensor>(this.paramGroups.flatMap((g) => g.params));
    for (const [i, p] of params.entries()) {
      if (!(p instanceof Tensor)) throw new ValueError(op, `params[${i}] is not a tensor`);
      p._check(op);
      if (!isFloating(p.dtype)) throw new DTypeError(op, `params[${i}] is ${p.dtype}; only floating point tensors can be optimized`);
      if (!p.isLeaf) throw new ValueError(op, `params[${i}] is not a leaf tensor (it was computed by an op); optimize leaves`);
      if (seen.has(p)) throw new ValueError(op, `params[${i}] (shape ${shapeStr(p.shape)}) appears in more than one place`);
      seen.add(p);
    }
    const filled: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(this.defaults)) filled[k] = cloneOption(v);
    for (const [k, v] of Object.entries(group)) if (k !== 'params' && v !== undefined) filled[k] = cloneOption(v);
    this.checkGroup(filled as unknown as O);
    const g = { ...(filled as unknown as O), params };
    this.paramGroups.push(g);
    for (const p of params) this.groupOf.set(p, g);
  }

  /**
   * Clears the gradients of every parameter. By default (setToNone true, kiln's default since its first
   * release and PyTorch 2's) disposes them and sets .grad to null, so the next backward allocates them
   * anew. setToNone false fills each .grad with zeros in place and keeps the tensor: a gradient that is
   * a view of a larger buffer (a data-parallel bucket) stays that view, and backward adds into it.
   */
  zeroGrad(setToNone = true): void {
    for (const g of this.paramGroups) {
      for (const p of g.params) {
        if (!p.grad) continue;
        if (setToNone) {
          p.grad.dispose();
          p.grad = null;
        } else {
          p.grad.zero_();
        }
      }
    }
  }

  /**
   * Updates every parameter that has a gradient. A closure, when given, is called first with grad
   * recording on (it should zero the grads, compute the loss and call backward) and its loss returned.
   */
  step<L>(closure?: () => L): L | undefined {
    const loss = closure ? enableGrad(closure) : undefined;
    gradSync.check(`${this.constructor.name}.step`);
    this.syncLr();
    noGrad(() => {
      for (const group of this.paramGroups) {
        const ps = group.params.filter((p) => p.grad);
        if (this.multiTensor(group)) {
          if (ps.length) this.stepParams(ps, (pcs, gcs, states) => this.updateMany(pcs, gcs, group, states));
        } else {
          for (const p of ps) this.stepParams([p], (pcs, gcs, states) => this.update(pcs[0], gcs[0], group, states[0]));
        }
      }
    });
    return loss;
  }

  /**
   * Checks ps and their gradients, runs update on their contiguous operands and states, and writes
   * the results back: the kernels need contiguous operands, so a strided parameter is updated in a
   * copy. A parameter's state is created (empty) before update runs, so nothing leaks when it throws.
   */
  private stepParams(ps: Tensor[], update: (params: Tensor[], grads: Tensor[], states: ParamState[]) => void): void {
    const op = `${this.constructor.name}.step`;
    const pcs: Tensor[] = [], gcs: Tensor[] = [];
    try {
      for (const p of ps) {
        const grad = p.grad!;
        p._check(op);
        grad._check(op);
        if (!sameShape(grad.shape, p.shape)) {
          throw new ShapeError(op, `gradient of shape ${shapeStr(grad.shape)} does not match parameter of shape ${shapeStr(p.shape)}`);
        }
        const pc = p.isContiguous() ? p : contiguousCopy(p);
        pcs.push(pc);
        if (pc !== p) this.copyOf.set(pc, p);
        gcs.push(grad.isContiguous() ? grad : contiguousCopy(grad));
      }
      update(pcs, gcs, ps.map((p) => {
        let state = this.state.get(p);
        if (!state) this.state.set(p, (state = {}));
        return state;
      }));
      ps.forEach((p, i) => {
        if (pcs[i] !== p) p.copy_(pcs[i]);
        else p._bumpVersion();
      });
    } finally {
      pcs.forEach((pc, i) => pc !== ps[i] && pc.dispose());
      gcs.forEach((gc, i) => gc !== ps[i].grad && gc.dispose());
      this.copyOf.clear();
    }
  }

  // The parameter of each contiguous copy the update methods work on: state is keyed (and laid out in
  // flat buffers) by the parameter itself.
  private readonly copyOf = new Map<Tensor, Tensor>();

  /** Each capturable group's learning rate on its parameters' device, and the value last written. */
  private readonly lrTensors = new Map<ParamGroup<O>, { tensor: Tensor; value: number }>();

  /**
   * Copies each capturable group's lr (group.lr, as an LR scheduler sets it) into the group's device
   * tensor that the kernels read, where it changed since the last copy; a no-op for other groups.
   * step() calls it first. A caller that captures step() into a CUDA graph calls it just before the
   * capture (a write inside the capture would be replayed with a stale value) and before each replay,
   * after the scheduler's step and outside the graph: the write is an ordinary op on the stream, and a
   * graph never re-runs JavaScript.
   */
  syncLr(): void {
    for (const [i, g] of this.paramGroups.entries()) {
      if (!this.capturable(g)) continue;
      let entry = this.lrTensors.get(g);
      if (!entry) {
        const devices = [...new Set(g.params.map((p) => p.device))];
        if (devices.length > 1) {
          throw new ValueError(`${this.constructor.name}.syncLr`, `group ${i} is capturable but its parameters are on ${devices.join(' and ')}; a capturable group keeps its learning rate on one device`);
        }
        entry = { tensor: keep(zeros([], { dtype: 'float64', device: devices[0] })), value: NaN };
        this.lrTensors.set(g, entry);
      }
      if (entry.value !== g.lr) {
        const t = entry.tensor;
        noGrad(() => t.fill_(g.lr));
        entry.value = g.lr;
      }
    }
  }

  /**
   * For updateMany() of a capturable group: the 0-d float64 tensor on the group's device holding its
   * lr, as syncLr() last wrote it (float64: the host path's precision, also for float64 parameters).
   */
  protected lrTensor(group: ParamGroup<O>): Tensor {
    const e = this.lrTensors.get(group);
    if (!e) throw new ValueError(`${this.constructor.name}.step`, 'the group is not capturable (no learning rate tensor)');
    return e.tensor;
  }

  /**
   * For the update methods: a parameter's step count as group keeps it, converting one kept the other
   * way (capturable changed): a number, or for a capturable group a 0-d float64 tensor on p's device
   * that the kernels advance (exact to 2^53 steps). Reading a device count back waits for the device.
   */
  protected stepCount(p: Tensor, group: ParamGroup<O>, count: Tensor | number): Tensor | number {
    if (this.capturable(group)) {
      if (count instanceof Tensor) return count;
      const device = (this.copyOf.get(p) ?? p).device;
      const t = keep(zeros([], { dtype: 'float64', device }));
      return noGrad(() => t.fill_(count));
    }
    if (!(count instanceof Tensor)) return count;
    const n = count.item();
    count.dispose();
    return n;
  }

  /**
   * For updateMany(): the indices of params in batches of one device and dtype (and one key(i), e.g.
   * a step count), in order; each index alone when foreach is false.
   */
  protected batches(params: readonly Tensor[], foreach: boolean, key: (i: number) => string = () => ''): number[][] {
    if (!foreach) return params.map((_, i) => [i]);
    const out = new Map<string, number[]>();
    params.forEach((p, i) => {
      const k = `${p.device}|${p.dtype}|${key(i)}`;
      if (!out.has(k)) out.set(k, []);
      out.get(k)!.push(i);
    });
    return [...out.values()];
  }

  /**
   * For update(): a zero state tensor of the given kind shaped like p, in p's state dtype (float32 for
   * bfloat16 and float16 parameters), kept out of every tidy scope (state outlives steps); a view of
   * the group's flat buffer of that kind when the group keeps its state flat.
   */
  protected zerosState(p: Tensor, kind: string): Tensor {
    p = this.copyOf.get(p) ?? p;
    const layout = this.layouts.get(this.groupOf.get(p)!);
    return layout ? layout.view(p, kind) : keep(zeros(p.shape, { dtype: stateDType(p.dtype), device: p.device }));
  }

  /** The group holding p; a ValueError naming op when the optimizer does not update p. */
  private groupFor(op: string, p: Tensor): ParamGroup<O> {
    const g = p instanceof Tensor ? this.groupOf.get(p) : undefined;
    if (!g) throw new ValueError(op, 'the tensor is not a parameter of this optimizer');
    return g;
  }

  /**
   * The state of one parameter (undefined before its first step): its tensors are the optimizer's own,
   * views of the flat buffers when its group keeps state flat. A ValueError when p is not optimized here.
   */
  paramState(p: Tensor): ParamState | undefined {
    this.groupFor(`${this.constructor.name}.paramState`, p);
    return this.state.get(p);
  }

  /**
   * Replaces one parameter's state with a copy of s (tensors converted to the parameter's state dtype
   * and device), checked as loadStateDict checks each entry; {} clears it (the next step starts anew).
   * The optimizer is unchanged when it throws.
   */
  setParamState(p: Tensor, s: ParamState): void {
    const op = `${this.constructor.name}.setParamState`;
    const group = this.groupFor(op, p);
    if (s === null || typeof s !== 'object' || Array.isArray(s)) throw new ValueError(op, 'the state must be an object');
    const next: ParamState = {};
    try {
      this.restoreState(op, `the parameter of shape ${shapeStr(p.shape)}`, s, p, group, next);
    } catch (e) {
      disposeState(next);
      throw e;
    }
    const old = this.state.get(p);
    if (old) disposeState(old);
    this.state.set(p, this.placeState(p, next));
  }

  /**
   * From now on keeps the state of group groupIndex (of every group when omitted) in one flat buffer
   * per state kind, each parameter's entry a view of its range (see FlatState); state the group has
   * already is moved there. A group's parameters must share a device and a state dtype.
   */
  useFlatState(groupIndex?: number): void {
    const op = `${this.constructor.name}.useFlatState`;
    const indices = groupIndex === undefined ? this.paramGroups.map((_, i) => i) : [this.checkGroupIndex(op, groupIndex)];
    for (const i of indices) {
      const g = this.paramGroups[i];
      if (this.layouts.has(g)) continue;
      const dtypes = [...new Set(g.params.map((p) => stateDType(p.dtype)))];
      const devices = [...new Set(g.params.map((p) => p.device))];
      if (dtypes.length > 1 || devices.length > 1) {
        throw new ValueError(op, `group ${i} keeps state in ${dtypes.join(' and ')} on ${devices.join(' and ')}; a flat buffer holds one dtype on one device`);
      }
      this.layouts.set(g, new FlatLayout(g.params, dtypes[0], devices[0]));
      for (const p of g.params) {
        const s = this.state.get(p);
        if (s) this.placeState(p, s);
      }
    }
  }

  /** The flat layout of group groupIndex's state, or null when the group keeps state per parameter. */
  flatState(groupIndex: number): FlatState | null {
    const layout = this.layouts.get(this.paramGroups[this.checkGroupIndex(`${this.constructor.name}.flatState`, groupIndex)]);
    if (!layout) return null;
    return { buffers: Object.fromEntries(layout.buffers), ranges: layout.ranges.map((r) => ({ ...r })), numel: layout.numel };
  }

  private checkGroupIndex(op: string, i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this.paramGroups.length) {
      throw new ValueError(op, `group index ${String(i)} is out of range (the optimizer has ${this.paramGroups.length} groups)`);
    }
    return i;
  }

  /** Moves s's tensors into p's views of its group's flat buffers when the group keeps state flat; returns s. */
  private placeState(p: Tensor, s: ParamState): ParamState {
    const layout = this.layouts.get(this.groupOf.get(p)!);
    if (!layout) return s;
    noGrad(() => {
      for (const [kind, t] of Object.entries(s)) {
        if (!(t instanceof Tensor)) continue;
        s[kind] = layout.view(p, kind).copy_(t);
        t.dispose();
      }
    });
    return s;
  }

  /** For update(): the tensor state[key] of a parameter; a ValueError when it is missing (state loaded from another optimizer). */
  protected stateTensor(s: ParamState, key: string, p: Tensor): Tensor {
    const v = s[key];
    if (!(v instanceof Tensor)) {
      throw new ValueError(`${this.constructor.name}.step`, `the state of the parameter of shape ${shapeStr(p.shape)} has no tensor '${key}'`);
    }
    return v;
  }

  /** The parameters across groups in index order (the keys of stateDict().state). */
  private indexedParams(): Tensor[] {
    return this.paramGroups.flatMap((g) => g.params);
  }

  /**
   * The optimizer's state: per-parameter state by index and each group's options. The tensors are the
   * optimizer's own (not copies): save them before the next step changes them. Step counts are numbers,
   * also those a capturable group keeps on the device (read back here, which waits for the device).
   */
  stateDict(): OptimizerStateDict {
    const index = new Map(this.indexedParams().map((p, i) => [p, i] as const));
    const state: Record<number, ParamState> = {};
    for (const [p, s] of this.state) {
      const i = index.get(p);
      if (i === undefined) continue;
      // A capturable group's step counts live on the device; the state holds them as numbers.
      const spec = this.stateSpec(this.groupOf.get(p)!);
      state[i] = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, spec?.[k] === 'step' && v instanceof Tensor ? v.item() : v]));
    }
    let next = 0;
    const paramGroups = this.paramGroups.map((g) => {
      const out: Record<string, unknown> & { params: number[] } = { params: g.params.map(() => next++) };
      for (const [k, v] of Object.entries(g)) if (k !== 'params') out[k] = cloneOption(v);
      return out;
    });
    return { state, paramGroups };
  }

  /**
   * Restores state saved by stateDict() from an optimizer over the same parameters (same groups and
   * sizes, in order). Tensors are copied, converted to each parameter's state dtype and device (into
   * the flat buffers of groups that keep state flat), so the caller may dispose the source. Everything is checked before the optimizer changes: the groups'
   * options as the constructor checks them (ValueError naming the group), each parameter's state
   * against what this optimizer keeps (ValueError naming the parameter and entry), its tensors'
   * shapes (ShapeError) and dtypes (DTypeError). The options that say how the optimizer runs rather
   * than what it computes (foreach, capturable) stay this optimizer's: a state saved by a run on one
   * machine resumes on another with its own choice (a capturable group's step counts go to its device).
   */
  loadStateDict(sd: OptimizerStateDict): void {
    const op = `${this.constructor.name}.loadStateDict`;
    if (!sd || typeof sd !== 'object' || !Array.isArray(sd.paramGroups) || typeof sd.state !== 'object' || sd.state === null) {
      throw new ValueError(op, 'expected {state, paramGroups}');
    }
    if (sd.paramGroups.length !== this.paramGroups.length) {
      throw new ValueError(op, `the state has ${sd.paramGroups.length} parameter groups, the optimizer ${this.paramGroups.length}`);
    }
    // Saved indices map to parameters through the saved groups' own lists, position by position.
    const byIndex = new Map<number, { p: Tensor; group: number }>();
    const groups = sd.paramGroups.map((g, i) => {
      const own = this.paramGroups[i];
      if (g === null || typeof g !== 'object' || !Array.isArray(g.params) || g.params.length !== own.params.length) {
        const n = g !== null && typeof g === 'object' && Array.isArray(g.params) ? g.params.length : 'no';
        throw new ValueError(op, `group ${i} has ${n} parameters in the state, ${own.params.length} in the optimizer`);
      }
      g.params.forEach((idx, k) => {
        if (!Number.isSafeInteger(idx) || idx < 0) throw new ValueError(op, `group ${i} lists parameter ${JSON.stringify(idx)}, not an index`);
        if (byIndex.has(idx)) throw new ValueError(op, `parameter ${idx} is listed twice in the state's groups`);
        byIndex.set(idx, { p: own.params[k], group: i });
      });
      const merged: Record<string, unknown> = { ...(own as unknown as Record<string, unknown>) };
      for (const [k, v] of Object.entries(g)) if (k !== 'params' && !EXECUTION_OPTIONS.has(k)) merged[k] = cloneOption(v);
      try {
        this.checkGroup(merged as unknown as ParamGroup<O>);
      } catch (e) {
        if (e instanceof KilnError) throw new ValueError(op, `group ${i} of the state: ${e.message}`);
        throw e;
      }
      return merged as unknown as ParamGroup<O>;
    });
    const restored = new Map<Tensor, ParamState>();
    try {
      for (const [key, entry] of Object.entries(sd.state)) {
        const owner = /^(0|[1-9][0-9]*)$/.test(key) ? byIndex.get(Number(key)) : undefined;
        if (!owner) throw new ValueError(op, `state for parameter ${JSON.stringify(key)}, which no group lists`);
        if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw new ValueError(op, `the state of parameter ${key} is not an object`);
        const s: ParamState = {};
        restored.set(owner.p, s);
        this.restoreState(op, `parameter ${key}`, entry, owner.p, groups[owner.group], s);
      }
    } catch (e) {
      for (const s of restored.values()) disposeState(s);
      throw e;
    }
    for (const s of this.state.values()) disposeState(s);
    this.state.clear();
    for (const [p, s] of restored) this.state.set(p, this.placeState(p, s));
    groups.forEach((g, i) => Object.assign(this.paramGroups[i], g));
  }

  /** Checks one parameter's saved state against group's spec and fills s with copies of it. */
  private restoreState(op: string, where: string, entry: ParamState, p: Tensor, group: ParamGroup<O>, s: ParamState): void {
    const spec = this.stateSpec(group);
    const keys = Object.keys(entry);
    if (spec && keys.length) {
      const keeps = `${this.constructor.name} keeps ${Object.keys(spec).join(', ') || 'nothing'} with these options`;
      const missing = Object.keys(spec).find((k) => !Object.hasOwn(entry, k));
      if (missing) throw new ValueError(op, `the state of ${where} has no '${missing}' (${keeps})`);
      const extra = keys.find((k) => !Object.hasOwn(spec, k));
      if (extra) throw new ValueError(op, `the state of ${where} has '${extra}', which ${this.constructor.name} does not keep (${keeps})`);
    }
    for (const [name, v] of Object.entries(entry)) {
      const kind = spec?.[name] ?? 'any';
      const fits = v instanceof Tensor ? kind !== 'step'
        : kind === 'step' ? Number.isSafeInteger(v) && (v as number) >= 0
        : kind === 'any' && Number.isFinite(v);
      if (!fits) throw new ValueError(op, `state '${name}' of ${where} must be ${NEEDS[kind]}, got ${v instanceof Tensor ? 'a tensor' : String(v)}`);
      if (!(v instanceof Tensor)) {
        s[name] = kind === 'step' ? this.stepCount(p, group, v as number) : v;
        continue;
      }
      v._check(op);
      if (!isFloating(v.dtype)) throw new DTypeError(op, `state '${name}' of ${where} is ${v.dtype}; optimizer state is floating point`);
      if (!sameShape(v.shape, p.shape)) {
        throw new ShapeError(op, `state '${name}' of ${where} has shape ${shapeStr(v.shape)}, the parameter ${shapeStr(p.shape)}`);
      }
      s[name] = this.copyLike(v, p);
    }
  }

  /** A copy of v in p's state dtype on p's device, kept out of every tidy scope. */
  private copyLike(v: Tensor, p: Tensor): Tensor {
    return noGrad(() => {
      const out = keep(zeros(p.shape, { dtype: stateDType(p.dtype), device: p.device }));
      const src = v.device === p.device ? v : v.to({ device: p.device });
      out.copy_(src);
      if (src !== v) src.dispose();
      return out;
    });
  }

  /** Frees the optimizer's state tensors and flat buffers (the parameters are the caller's). */
  dispose(): void {
    for (const s of this.state.values()) disposeState(s);
    this.state.clear();
    for (const l of this.layouts.values()) l.dispose();
    this.layouts.clear();
    for (const e of this.lrTensors.values()) e.tensor.dispose();
    this.lrTensors.clear();
  }
}

/** Group options that say how an optimizer runs, not what it computes: loadStateDict keeps its own. */
const EXECUTION_OPTIONS = new Set(['foreach', 'capturable']);

const NEEDS = { step: 'a step count (an integer >= 0)', tensor: 'a tensor', any: 'a tensor or a finite number' };

function disposeState(s: ParamState): void {
  for (const v of Object.values(s)) if (v instanceof Tensor) v.dispose();
}

/** @internal Throws ValueError unless value is a finite number >= min (or > min when strict). */
export function checkNumber(op: string, name: string, value: unknown, min = 0, strict = false): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || (strict && value === min)) {
    throw new ValueError(op, `${name} must be a finite number ${strict ? '>' : '>='} ${min}, got ${String(value)}`);
  }
}

/** @internal Throws ValueError unless value is a boolean. */
export function checkBool(op: string, name: string, value: unknown): void {
  if (typeof value !== 'boolean') throw new ValueError(op, `${name} must be a boolean, got ${String(value)}`);
}

/** @internal The checks of ExecutionOptions (foreach, capturable), for the optimizers that have them. */
export function checkExecutionOptions(op: string, o: ExecutionOptions): void {
  checkBool(op, 'foreach', o.foreach);
  checkBool(op, 'capturable', o.capturable);
}
