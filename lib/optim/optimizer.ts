// The Optimizer base class: parameter groups with per-group options over defaults, zeroGrad, step
// (one fused native update per parameter, under noGrad), per-parameter state, and stateDict /
// loadStateDict in PyTorch's layout (state by parameter index, groups with their options) so that a
// run resumes exactly. A loaded state is checked as strictly as options given in code: a state read
// from a damaged or foreign file is an error naming the entry, never moments silently reset or an lr
// of NaN. Also the native slice the optimizers and clipGradNorm call.
import { enableGrad, noGrad } from '../autograd/grad_mode';
import { isFloating } from '../dtype';
import { DTypeError, KilnError, ShapeError, ValueError } from '../errors';
import { keep } from '../memory';
import type { NativeHandle } from '../native';
import { native } from '../native';
import { contiguousCopy, zerosLike } from '../ops/creation';
import { sameShape, shapeStr } from '../shape';
import { Tensor } from '../tensor';

/** @internal The fused kernels of native/binding/optim.cc. */
export interface OptimNative {
  sgdStep(
    param: NativeHandle, grad: NativeHandle, momentumBuffer: NativeHandle | null,
    o: { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean; maximize: boolean; firstStep: boolean },
  ): void;
  adamStep(
    param: NativeHandle, grad: NativeHandle, expAvg: NativeHandle, expAvgSq: NativeHandle, maxExpAvgSq: NativeHandle | null,
    o: {
      lr: number; beta1: number; beta2: number; eps: number; weightDecay: number;
      biasCorrection1: number; biasCorrection2Sqrt: number; decoupled: boolean; maximize: boolean;
    },
  ): void;
  clipGradNorm(grads: NativeHandle[], maxNorm: number, normType: number, total: NativeHandle, errorIfNonfinite: boolean): void;
}
/** @internal */
export const optimNative = native as unknown as OptimNative;

/** Options every optimizer has; each optimizer adds its own. */
export interface BaseOptions {
  /** Learning rate (schedulers change it per group as they step). */
  lr: number;
  /** Set by the first LR scheduler attached to the optimizer: the lr its schedule scales. */
  initialLr?: number;
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
    this.paramGroups.push({ ...(filled as unknown as O), params });
  }

  /**
   * Clears the gradients of every parameter: disposes them and sets .grad to null (like PyTorch's
   * set_to_none), or fills them with zeros when setToNone is false.
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
    noGrad(() => {
      for (const group of this.paramGroups) {
        for (const p of group.params) if (p.grad) this.stepParam(p, p.grad, group);
      }
    });
    return loss;
  }

  private stepParam(p: Tensor, grad: Tensor, group: ParamGroup<O>): void {
    p._check(`${this.constructor.name}.step`);
    grad._check(`${this.constructor.name}.step`);
    if (!sameShape(grad.shape, p.shape)) {
      throw new ShapeError(`${this.constructor.name}.step`, `gradient of shape ${shapeStr(grad.shape)} does not match parameter of shape ${shapeStr(p.shape)}`);
    }
    // The kernels need contiguous operands: a strided parameter is updated in a copy and written back.
    const pc = p.isContiguous() ? p : contiguousCopy(p);
    const gc = grad.isContiguous() ? grad : contiguousCopy(grad);
    let state = this.state.get(p);
    if (!state) this.state.set(p, (state = {}));
    try {
      this.update(pc, gc, group, state);
      if (pc !== p) p.copy_(pc);
      else p._bumpVersion();
    } finally {
      if (pc !== p) pc.dispose();
      if (gc !== grad) gc.dispose();
    }
  }

  /** For update(): a zero tensor shaped like p, kept out of every tidy scope (state outlives steps). */
  protected zerosState(p: Tensor): Tensor {
    return keep(zerosLike(p));
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
   * optimizer's own (not copies): save them before the next step changes them.
   */
  stateDict(): OptimizerStateDict {
    const index = new Map(this.indexedParams().map((p, i) => [p, i] as const));
    const state: Record<number, ParamState> = {};
    for (const [p, s] of this.state) {
      const i = index.get(p);
      if (i !== undefined) state[i] = { ...s };
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
   * sizes, in order). Tensors are copied, converted to each parameter's dtype and device, so the
   * caller may dispose the source. Everything is checked before the optimizer changes: the groups'
   * options as the constructor checks them (ValueError naming the group), each parameter's state
   * against what this optimizer keeps (ValueError naming the parameter and entry), its tensors'
   * shapes (ShapeError) and dtypes (DTypeError).
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
      for (const [k, v] of Object.entries(g)) if (k !== 'params') merged[k] = cloneOption(v);
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
        this.restoreState(op, `parameter ${key}`, entry, owner.p, this.stateSpec(groups[owner.group]), s);
      }
    } catch (e) {
      for (const s of restored.values()) disposeState(s);
      throw e;
    }
    for (const s of this.state.values()) disposeState(s);
    this.state.clear();
    for (const [p, s] of restored) this.state.set(p, s);
    groups.forEach((g, i) => Object.assign(this.paramGroups[i], g));
  }

  /** Checks one parameter's saved state against spec and fills s with copies of it. */
  private restoreState(op: string, where: string, entry: ParamState, p: Tensor, spec: StateSpec | null, s: ParamState): void {
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
        s[name] = v;
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

  private copyLike(v: Tensor, p: Tensor): Tensor {
    return noGrad(() => {
      const out = this.zerosState(p);
      const src = v.device === p.device ? v : v.to({ device: p.device });
      out.copy_(src);
      if (src !== v) src.dispose();
      return out;
    });
  }

  /** Frees the optimizer's state tensors (the parameters are the caller's). */
  dispose(): void {
    for (const s of this.state.values()) disposeState(s);
    this.state.clear();
  }
}

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
