// Module (the base of every layer), Parameter, and the containers Sequential, ModuleList, ModuleDict.
//
// Registration. A module's parameters and submodules are found by scanning its own enumerable
// properties in definition order, so assignment registers them like in PyTorch:
//
//   class MLP extends nn.Module {
//     fc1 = new nn.Linear(4, 8);          // child 'fc1': parameters 'fc1.weight', 'fc1.bias'
//     scale = nn.Parameter.own(kiln.ones([8]));   // own(): the Parameter takes the tensor over
//     forward(x: Tensor) { return this.fc1.forward(x).mul(this.scale); }
//   }
//
// - A field holding a Module is a child; a field holding a Parameter is a parameter; anything else
//   (numbers, plain tensors, arrays) is ignored. Lists and maps of modules go in a ModuleList /
//   ModuleDict (a plain array is not scanned, as in PyTorch).
// - Non-parameter state (masks, running statistics) is registered explicitly with
//   registerBuffer(name, tensor, {persistent}); persistent buffers are part of stateDict().
// - To hold a module or parameter that is not owned (a back reference), use a #private field:
//   those are not enumerable and never scanned.
// - The same Parameter reachable under two names (weight tying) is one parameter: parameters() and
//   numParameters() count it once, stateDict() lists both names, like PyTorch.
//
// Memory. A module owns its parameters and buffers: they live outside every tidy scope, are freed
// by module.dispose(), and methods that replace them (to(), registerBuffer over an old one,
// Parameter.setData) free what they replace. Parameters and buffers keep their object identity when
// moved, so optimizers and fields holding them stay valid.
import { noGrad } from '../autograd/grad_mode';
import { DType, DTYPES, isFloating } from '../dtype';
import type { Device } from '../device';
import { AutogradError, KilnError, ShapeError, ValueError } from '../errors';
import { keep } from '../memory';
import { sameShape, shapeStr } from '../shape';
import { Tensor } from '../tensor';

type MutableTensor = { -readonly [K in keyof Tensor]: Tensor[K] };

/**
 * Points target at src's storage and metadata (the handle target held is released). Used to move
 * parameters and buffers in place; `owned` says that src is about to be disposed, so target becomes
 * the storage's only holder.
 */
function rebind(target: Tensor, src: Tensor, owned: boolean): void {
  target._check('setData');
  src._check('setData');
  target._replaceHandle(src._aliasHandle());
  const m = target as unknown as MutableTensor;
  m.shape = src.shape;
  m.strides = src.strides;
  m.offset = src.offset;
  m.dtype = src.dtype;
  m._dev = src._dev;
  m.numel = src.numel;
  m._isView = owned ? src._isView : true;
}

/**
 * A tensor that is a module's learnable weight: a leaf that requires grad (unless created with
 * requiresGrad false). Like torch.nn.Parameter it shares storage with the tensor it is made from;
 * it is never part of a tidy scope (the module that holds it frees it).
 */
export class Parameter extends Tensor {
  /**
   * A parameter sharing data's storage (data stays usable and must still be disposed; own() takes it
   * over instead). requiresGrad needs a floating dtype (an AutogradError otherwise).
   */
  constructor(data: Tensor, requiresGrad = true) {
    data._check('Parameter');
    if (requiresGrad && !isFloating(data.dtype)) {
      throw new AutogradError('Parameter', `only floating point tensors can require gradients, got ${data.dtype}`);
    }
    super(data._aliasHandle(), data.shape, data.strides, data.offset, data.dtype, data._dev, 'gc');
    this._isView = true;
    this.requiresGrad = requiresGrad;
  }

  /** A Parameter that takes over data's storage: data is disposed. */
  static own(data: Tensor, requiresGrad = true): Parameter {
    const p = new Parameter(data, requiresGrad);
    data.dispose();
    p._isView = false;
    return p;
  }

  /** Replaces this parameter's values, shape, dtype or device by t's (like `param.data = t`); the object stays the same. */
  setData(t: Tensor): void {
    if (this.requiresGrad && !isFloating(t.dtype)) {
      throw new AutogradError('setData', `a parameter that requires grad needs floating point data, got ${t.dtype}`);
    }
    rebind(this, t, false);
  }
}

/** Options of Module.loadStateDict. */
export interface LoadStateDictOptions {
  /** Require the keys to match exactly (default true). */
  strict?: boolean;
  /** Renames each key of the state dict to this module's name for it; null drops the key. */
  keyMap?: (key: string) => string | null;
}

/**
 * What loadStateDict found: with strict false, the keys that did not match (with strict, a mismatch
 * throws).
 */
export interface StateDictLoadResult {
  /**
   * The module's parameter and persistent buffer names the state dict did not have (those kept their
   * values).
   */
  missingKeys: string[];
  /** Names in the state dict that the module does not have (ignored). */
  unexpectedKeys: string[];
}

type ToTarget = DType | Device | 'cuda' | { dtype?: DType; device?: string };

interface BufferEntry {
  tensor: Tensor | null;
  persistent: boolean;
}

/**
 * Base class of layers and models (like torch.nn.Module). Assigning a field registers it: a field
 * holding a Module is a child, a field holding a Parameter is a parameter (in definition order);
 * lists and maps of modules go in a ModuleList or ModuleDict (plain arrays are not scanned), other
 * state is registered with registerBuffer(), and #private fields are never scanned (back references).
 * A module owns its parameters and buffers: dispose() frees them.
 *
 * ```ts
 * class MLP extends nn.Module {
 *   fc1 = new nn.Linear(4, 8);                        // parameters 'fc1.weight', 'fc1.bias'
 *   scale = nn.Parameter.own(kiln.ones([8]));         // parameter 'scale'
 *   override forward(x: Tensor): Tensor { return this.fc1.forward(x).mul(this.scale); }
 * }
 * ```
 */
export class Module {
  /** True in training mode (dropout active), false after eval(). */
  training = true;
  readonly #buffers = new Map<string, BufferEntry>();

  /**
   * The computation of the module. Subclasses define it with their own signature (a module's type
   * then says what its forward takes and returns; a plain Module's forward returns unknown).
   */
  forward(...args: unknown[]): unknown {
    throw new KilnError(this.constructor.name, 'has no forward()');
  }

  // ---- structure ----

  /** Direct submodules with their names. */
  namedChildren(): Array<[string, Module]> {
    const out: Array<[string, Module]> = [];
    for (const [k, v] of Object.entries(this)) if (v instanceof Module) out.push([k, v]);
    return out;
  }
  /** Direct submodules (namedChildren without the names). */
  children(): Module[] {
    return this.namedChildren().map(([, m]) => m);
  }

  /** This module and every submodule, depth first, with dotted names ('' for this module); each once. */
  namedModules(prefix = '', memo: Set<Module> = new Set()): Array<[string, Module]> {
    const out: Array<[string, Module]> = [];
    walk(this, prefix, memo, (name, m) => void out.push([name, m]));
    return out;
  }
  /** This module and every submodule, depth first, each once (namedModules without the names). */
  modules(): Module[] {
    return this.namedModules().map(([, m]) => m);
  }

  /** The submodule at a dotted path ('blocks.0.attn'). */
  getSubmodule(path: string): Module {
    let m: Module = this;
    if (path === '') return m;
    for (const part of path.split('.')) {
      const next = m.namedChildren().find(([n]) => n === part);
      if (!next) throw new ValueError('getSubmodule', `${m.constructor.name} has no submodule '${part}' (in '${path}')`);
      m = next[1];
    }
    return m;
  }

  /** This module's own parameters (not its children's). */
  protected ownParameters(): Array<[string, Parameter]> {
    const out: Array<[string, Parameter]> = [];
    for (const [k, v] of Object.entries(this)) if (v instanceof Parameter) out.push([k, v]);
    return out;
  }

  /**
   * Parameters with dotted names ('blocks.0.attn.inProjWeight'). A parameter shared by several
   * modules is listed once (under its first name) unless removeDuplicate is false.
   */
  namedParameters(opts: { prefix?: string; recurse?: boolean; removeDuplicate?: boolean } = {}): Array<[string, Parameter]> {
    return this.collect(opts, (m) => m.ownParameters());
  }
  /**
   * Every parameter (shared ones once), or only this module's own with recurse false: what an optimizer
   * takes.
   */
  parameters(recurse = true): Parameter[] {
    return this.namedParameters({ recurse }).map(([, p]) => p);
  }

  /** Buffers (registered non-parameter tensors) with dotted names. */
  namedBuffers(opts: { prefix?: string; recurse?: boolean; removeDuplicate?: boolean } = {}): Array<[string, Tensor]> {
    return this.collect(opts, (m) => m.ownBuffers(false));
  }
  /** Every buffer, or only this module's own with recurse false. */
  buffers(recurse = true): Tensor[] {
    return this.namedBuffers({ recurse }).map(([, b]) => b);
  }

  private ownBuffers(persistentOnly: boolean): Array<[string, Tensor]> {
    const out: Array<[string, Tensor]> = [];
    for (const [k, e] of this.#buffers) if (e.tensor && (e.persistent || !persistentOnly)) out.push([k, e.tensor]);
    return out;
  }

  private collect<T extends Tensor>(
    opts: { prefix?: string; recurse?: boolean; removeDuplicate?: boolean },
    own: (m: Module) => Array<[string, T]>,
  ): Array<[string, T]> {
    const mods: Array<[string, Module]> = opts.recurse === false ? [[opts.prefix ?? '', this]] : this.namedModules(opts.prefix ?? '');
    const seen = new Set<Tensor>();
    const out: Array<[string, T]> = [];
    for (const [mp, m] of mods) {
      for (const [n, t] of own(m)) {
        if (opts.removeDuplicate !== false) {
          if (seen.has(t)) continue;
          seen.add(t);
        }
        out.push([join(mp, n), t]);
      }
    }
    return out;
  }

  /**
   * Registers (or replaces, or with null removes) a buffer: state that is not learned but belongs to
   * the module, moves with to() and, when persistent, is saved in stateDict(). The module takes
   * ownership of the tensor (it leaves every tidy scope); a replaced buffer is disposed.
   */
  registerBuffer<T extends Tensor | null>(name: string, tensor: T, opts: { persistent?: boolean } = {}): T {
    if (!name || name.includes('.')) throw new ValueError('registerBuffer', `invalid buffer name '${name}'`);
    const old = this.#buffers.get(name)?.tensor;
    if (old && old !== tensor) old.dispose();
    if (tensor) keep(tensor);
    this.#buffers.set(name, { tensor, persistent: opts.persistent ?? true });
    return tensor;
  }
  /** The buffer registered under name (null when absent or set to null). */
  getBuffer(name: string): Tensor | null {
    return this.#buffers.get(name)?.tensor ?? null;
  }

  // ---- modes and gradients ----

  /** Sets training mode on this module and all submodules. */
  train(mode = true): this {
    for (const m of this.modules()) m.training = mode;
    return this;
  }
  /** Evaluation mode: dropout off. */
  eval(): this {
    return this.train(false);
  }

  /** Stops gradients to every parameter (requiresGrad off). */
  freeze(): this {
    for (const p of this.parameters()) p.requiresGrad = false;
    return this;
  }
  /** Turns requiresGrad back on for every parameter. */
  unfreeze(): this {
    for (const p of this.parameters()) p.requiresGrad = true;
    return this;
  }

  /** Frees every parameter's gradient and sets it to null (PyTorch's set_to_none), or zeroes it in place. */
  zeroGrad(setToNone = true): void {
    for (const p of this.parameters()) {
      if (!p.grad) continue;
      if (setToNone) {
        p.grad.dispose();
        p.grad = null;
      } else {
        noGrad(() => p.grad!.zero_());
      }
    }
  }

  /** Calls fn on every submodule (children first) and on this module. */
  apply(fn: (m: Module) => void): this {
    walk(this, '', null, null, fn);
    return this;
  }

  /** Number of parameter elements (shared parameters counted once). */
  numParameters(opts: { trainableOnly?: boolean } = {}): number {
    let n = 0;
    for (const p of this.parameters()) if (!opts.trainableOnly || p.requiresGrad) n += p.numel;
    return n;
  }

  // ---- moving ----

  /**
   * Moves parameters, their gradients and buffers to a device and/or converts the floating point ones
   * to a dtype, in place: the Parameter and buffer objects stay the same. Returns this.
   */
  to(target: ToTarget): this {
    const opts = typeof target === 'string' ? ((DTYPES as readonly string[]).includes(target) ? { dtype: target as DType } : { device: target }) : target;
    const convert = (t: Tensor): Tensor =>
      t.to({ dtype: opts.dtype && isFloating(t.dtype) ? opts.dtype : t.dtype, device: opts.device ?? t.device });
    noGrad(() => {
      const move = (t: Tensor) => {
        const moved = convert(t);
        if (moved === t) return;
        rebind(t, moved, true);
        moved.dispose();
      };
      for (const p of this.parameters()) {
        move(p);
        if (p.grad) {
          const g = convert(p.grad);
          if (g !== p.grad) {
            p.grad.dispose();
            p.grad = keep(g);
          }
        }
      }
      for (const b of this.buffers()) move(b);
    });
    return this;
  }
  /** to({ device: 'cpu' }): moves parameters, gradients and buffers to the CPU in place. */
  cpu(): this { return this.to({ device: 'cpu' }); }
  /** to({ device: `cuda:${index}` }): moves parameters, gradients and buffers to GPU index in place. */
  cuda(index = 0): this { return this.to({ device: `cuda:${index}` }); }
  /** to('float32'): converts the floating point parameters and buffers in place. */
  float(): this { return this.to('float32'); }
  /** to('float64'): converts the floating point parameters and buffers in place. */
  double(): this { return this.to('float64'); }
  /** to('float16'): converts the floating point parameters and buffers in place. */
  half(): this { return this.to('float16'); }
  /** to('bfloat16'): converts the floating point parameters and buffers in place. */
  bfloat16(): this { return this.to('bfloat16'); }

  // ---- state ----

  /**
   * Parameters and persistent buffers by dotted name, in module order (a tied parameter appears under
   * each of its names). The tensors are detached aliases of the module's storage: disposing them
   * does not free the module's tensors, and writing into them writes into the module.
   */
  stateDict(prefix = ''): Map<string, Tensor> {
    const sd = new Map<string, Tensor>();
    for (const [mp, m] of this.namedModules(prefix)) {
      for (const [n, t] of [...m.ownParameters(), ...m.ownBuffers(true)]) sd.set(join(mp, n), t.detach());
    }
    return sd;
  }

  /**
   * Copies values from a state dict (a Map or a record of name -> tensor) into this module's
   * parameters and persistent buffers, converting dtype and device. Shapes must match. With strict
   * (default) the keys must match exactly too. keyMap renames the state dict's keys to this module's
   * first (null drops a key), so other layouts load: `{ keyMap: (k) => k.replace(/^model\./, '') }`.
   * Everything is checked before anything is copied; the error lists every missing key, unexpected
   * key and size mismatch.
   */
  loadStateDict(stateDict: Map<string, Tensor> | Record<string, Tensor>, opts: LoadStateDictOptions = {}): StateDictLoadResult {
    const strict = opts.strict ?? true;
    let entries = stateDict instanceof Map ? [...stateDict.entries()] : Object.entries(stateDict);
    if (opts.keyMap) {
      const keyMap = opts.keyMap;
      const renamed: Array<[string, Tensor]> = [];
      const from = new Map<string, string>();
      for (const [k, t] of entries) {
        const to = keyMap(k);
        if (to === null) continue;
        if (typeof to !== 'string') throw new ValueError('loadStateDict', `keyMap returned ${JSON.stringify(to)} for ${k}; expected a key or null`);
        if (from.has(to)) throw new ValueError('loadStateDict', `keyMap maps both ${from.get(to)} and ${k} to ${to}`);
        from.set(to, k);
        renamed.push([to, t]);
      }
      entries = renamed;
    }
    const given = new Map(entries);
    const own = new Map<string, Tensor>();
    for (const [mp, m] of this.namedModules()) {
      for (const [n, t] of [...m.ownParameters(), ...m.ownBuffers(true)]) own.set(join(mp, n), t);
    }
    const missingKeys = [...own.keys()].filter((k) => !given.has(k));
    const unexpectedKeys = [...given.keys()].filter((k) => !own.has(k));
    const mismatches: string[] = [];
    for (const [k, t] of own) {
      const src = given.get(k);
      if (src && !sameShape(src.shape, t.shape)) {
        mismatches.push(`size mismatch for ${k}: shape ${shapeStr(src.shape)} in the state dict, ${shapeStr(t.shape)} in the model`);
      }
    }
    // One line (a command prints only the first): long lists are cut after a few names.
    const some = (keys: string[]) => `${keys.slice(0, 6).join(', ')}${keys.length > 6 ? `, ... (${keys.length} in all)` : ''}`;
    const problems = mismatches.length > 3 ? [...mismatches.slice(0, 3), `${mismatches.length - 3} more size mismatches`] : [...mismatches];
    if (strict && missingKeys.length) problems.push(`missing keys: ${some(missingKeys)}`);
    if (strict && unexpectedKeys.length) problems.push(`unexpected keys: ${some(unexpectedKeys)}`);
    if (problems.length) {
      const msg = `error(s) loading the state dict into ${this.constructor.name}: ${problems.join('; ')}`;
      throw mismatches.length ? new ShapeError('loadStateDict', msg) : new ValueError('loadStateDict', msg);
    }
    noGrad(() => {
      for (const [k, t] of own) {
        const src = given.get(k);
        if (src && src !== t) t.copy_(src);
      }
    });
    return { missingKeys, unexpectedKeys };
  }

  /** Frees every parameter, gradient and buffer of this module and its submodules. */
  dispose(): void {
    for (const p of this.parameters()) {
      p.grad?.dispose();
      p.grad = null;
      p.dispose();
    }
    for (const m of this.modules()) {
      for (const e of m.#buffers.values()) e.tensor?.dispose();
      m.#buffers.clear();
    }
  }
  /** dispose(), for `using` declarations. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- printing ----

  /** Extra text shown in this module's line of toString() (sizes, options). */
  extraRepr(): string {
    return '';
  }
  /** The module tree as PyTorch prints it: class names, extraRepr() and the children indented. */
  toString(): string {
    const kids = this.namedChildren();
    const head = `${this.constructor.name}(${this.extraRepr()}`;
    if (!kids.length) return `${head})`;
    const lines = kids.map(([n, m]) => `  (${n}): ${m.toString().replace(/\n/g, '\n  ')}`);
    return `${head}\n${lines.join('\n')}\n)`;
  }
}

function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

/**
 * Depth-first traversal of root and its submodules: enter(name, m) before a module's children,
 * exit(m) after them. With a memo, a module reachable twice is visited once (under its first name).
 * An explicit stack rather than recursion, so that models nested hundreds of thousands deep do not
 * overflow the call stack.
 */
function walk(
  root: Module,
  prefix: string,
  memo: Set<Module> | null,
  enter: ((name: string, m: Module) => void) | null,
  exit?: (m: Module) => void,
): void {
  if (memo?.has(root)) return;
  memo?.add(root);
  enter?.(prefix, root);
  const stack = [{ m: root, name: prefix, kids: root.namedChildren(), i: 0 }];
  while (stack.length) {
    const top = stack[stack.length - 1];
    if (top.i === top.kids.length) {
      stack.pop();
      exit?.(top.m);
      continue;
    }
    const [n, child] = top.kids[top.i++];
    if (memo?.has(child)) continue;
    memo?.add(child);
    const name = join(top.name, n);
    enter?.(name, child);
    stack.push({ m: child, name, kids: child.namedChildren(), i: 0 });
  }
}

/** A list of submodules, registered under their indices ('0', '1', ...). */
export class ModuleList<M extends Module = Module> extends Module {
  readonly #items: M[];
  /** A list of modules, registered as children named by index. */
  constructor(modules: Iterable<M> = []) {
    super();
    this.#items = [...modules];
  }
  override namedChildren(): Array<[string, Module]> {
    return this.#items.map((m, i) => [String(i), m]);
  }
  /** Number of modules. */
  get length(): number {
    return this.#items.length;
  }
  /** The module at index i (negative counts from the end). */
  at(i: number): M {
    const m = this.#items.at(i);
    if (!m) throw new ValueError('ModuleList.at', `index ${i} is out of range for ${this.#items.length} modules`);
    return m;
  }
  /** Appends modules (registered under the next indices); returns this. */
  push(...modules: M[]): this {
    this.#items.push(...modules);
    return this;
  }
  /** The modules in order. */
  [Symbol.iterator](): Iterator<M> {
    return this.#items[Symbol.iterator]();
  }
}

/** A module whose forward maps one tensor to one tensor: what Sequential chains. */
export interface TensorModule extends Module {
  /** Maps one tensor to one tensor. */
  forward(x: Tensor): Tensor;
}

/** Modules applied one after another: forward(x) = m_n(...m_1(x)). */
export class Sequential extends ModuleList<TensorModule> {
  /** Chains modules that each map a tensor to a tensor (like torch.nn.Sequential). */
  constructor(...modules: TensorModule[]) {
    super(modules);
  }
  /** Runs x through every module in order. */
  override forward(x: Tensor): Tensor {
    let y = x;
    for (const m of this) y = m.forward(y);
    return y;
  }
}

/** Submodules by name, in insertion order. */
export class ModuleDict<M extends Module = Module> extends Module {
  readonly #items = new Map<string, M>();
  /** Modules by name (an object, or [name, module] pairs), registered as children. */
  constructor(modules: Record<string, M> | Iterable<[string, M]> = {}) {
    super();
    const entries = Symbol.iterator in modules ? modules : Object.entries(modules);
    for (const [k, m] of entries as Iterable<[string, M]>) this.set(k, m);
  }
  override namedChildren(): Array<[string, Module]> {
    return [...this.#items.entries()];
  }
  /** The module named key (a ValueError naming the known keys when absent). */
  get(key: string): M {
    const m = this.#items.get(key);
    if (!m) throw new ValueError('ModuleDict.get', `no module named '${key}'; have ${[...this.#items.keys()].join(', ')}`);
    return m;
  }
  /** Adds or replaces the module named key (no dots; a ValueError otherwise); returns this. */
  set(key: string, m: M): this {
    if (!key || key.includes('.')) throw new ValueError('ModuleDict.set', `invalid module name '${key}'`);
    this.#items.set(key, m);
    return this;
  }
  /** Whether a module is named key. */
  has(key: string): boolean {
    return this.#items.has(key);
  }
  /** Removes the module named key (it is not disposed); true when there was one. */
  delete(key: string): boolean {
    return this.#items.delete(key);
  }
  /** The names, in insertion order. */
  keys(): string[] {
    return [...this.#items.keys()];
  }
  /** The modules, in insertion order. */
  values(): M[] {
    return [...this.#items.values()];
  }
  /** The [name, module] pairs, in insertion order. */
  entries(): Array<[string, M]> {
    return [...this.#items.entries()];
  }
  /** Number of modules. */
  get size(): number {
    return this.#items.size;
  }
}
