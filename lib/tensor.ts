// The Tensor class: metadata (shape, strides, offset, dtype, device) over a native handle, autograd
// state, reading back, and the method forms of the ops (each defined once in lib/ops/<family>.ts).
import { Node, runBackward } from './autograd/engine';
import { isGradEnabled } from './autograd/grad_mode';
import { DType, DTYPE_CODE, DTYPES, ITEMSIZE, isFloating } from './dtype';
import { Device, deviceName } from './device';
import { AutogradError, DisposedError, ShapeError, ValueError } from './errors';
import { formatTensor } from './format';
import { MAX_HOST_ARRAY_LENGTH, hostAlloc, track } from './memory';
import { NativeHandle, native } from './native';
import { numel } from './shape';
import * as creation from './ops/creation';
import * as ew from './ops/elementwise';
import * as idx from './ops/indexing';
import * as mm from './ops/matmul';
import * as norm from './ops/norm';
import * as rand from './ops/random';
import * as red from './ops/reduce';
import * as sh from './ops/shape';
import * as sm from './ops/softmax';
import type { VarianceOptions } from './ops/reduce';

// Symbol.dispose (for `using` declarations) exists in every Node.js kiln supports (20 and up), but
// TypeScript declares it only in lib "esnext.disposable" (and @types/node): declaring it here lets a
// consumer compile kiln's declarations with neither. The declaration is the same as theirs, so it
// merges with them.
declare global {
  interface SymbolConstructor {
    readonly dispose: unique symbol;
  }
}

/** An operand of the arithmetic ops: a tensor, or a number that broadcasts like a 0-d tensor. */
export type TensorOrScalar = Tensor | number;

/** What registerHook and registerPostAccumulateGradHook return (like PyTorch's RemovableHandle). */
export interface HookHandle {
  /** Unregisters the hook (a second call does nothing). */
  remove(): void;
}

/** Options of Tensor.backward. */
export interface BackwardOptions {
  /** Keep the graph's saved tensors so that backward can run through it again (default false). */
  retainGraph?: boolean;
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  return v === null ? 'null' : typeof v === 'object' ? `an instance of ${v.constructor?.name ?? 'Object'}` : `${typeof v} ${String(v)}`;
}

// The safety net for tensors nobody disposes: once the garbage collector has collected one, its
// handle (and its reference to the graph node that made it) is released the next time the event
// loop turns. Only tensors outside every tidy scope are registered (a scope disposes its own, and
// registering costs about 0.5 us per tensor); dispose() unregisters, so a disposed tensor leaves
// nothing for a finalizer and a synchronous loop that disposes what it makes holds steady memory.
const handleRegistry = new FinalizationRegistry<NativeHandle>((h) => native.dispose(h));
const graphRegistry = new FinalizationRegistry<Node['life']>((life) => life.unref());
/**
 * Nested JavaScript arrays of numbers or booleans, as kiln.tensor() takes them and toArray() returns
 * them (a bare number for a 0-d tensor).
 */
export type NestedArray = number | boolean | NestedArray[];

/** A multi-dimensional array on a device, with autograd. Create tensors with kiln.tensor(), kiln.zeros(), ... */
export class Tensor {
  /** @internal */ _h: NativeHandle;
  /** Size of each dimension. */
  readonly shape: readonly number[];
  /** Elements to step in storage per index step of each dimension. */
  readonly strides: readonly number[];
  /** Element offset of the first element in storage. */
  readonly offset: number;
  /** The element type: float32, float64, bfloat16, float16, int32, int64 or bool. */
  readonly dtype: DType;
  /** @internal native device code: -1 cpu, N cuda:N */
  readonly _dev: number;
  /** Number of elements. */
  readonly numel: number;
  /** The accumulated gradient (leaves that require grad, and tensors that called retainGrad()). */
  grad: Tensor | null = null;
  private _gradFn: Node | null = null;
  /** @internal true when this tensor shares storage with another (views, aliases). */
  _isView = false;
  /** @internal */ _gradHooks: Array<(grad: Tensor) => Tensor | void> = [];
  /** @internal */ _postAccumulateHooks: Array<(t: Tensor) => void> = [];
  private _requiresGrad = false;
  private _disposed = false;
  /** Registered with the safety net (outside every tidy scope). */
  private _collectable = false;

  /**
   * Not for users: create tensors with kiln.tensor(), kiln.zeros() and the other creation functions
   * (h is a handle only the addon makes). `owner` says who frees the
   * handle if nobody disposes it: the innermost tidy scope ('scope'; outside every scope the
   * collector), the collector ('gc'), or a graph node that disposes it itself ('graph').
   */
  constructor(h: NativeHandle, shape: readonly number[], strides: readonly number[], offset: number, dtype: DType, dev: number, owner: 'scope' | 'gc' | 'graph' = 'scope') {
    this._h = h;
    this.shape = shape;
    this.strides = strides;
    this.offset = offset;
    this.dtype = dtype;
    this._dev = dev;
    this.numel = numel(shape);
    if (owner === 'scope') track(this);
    else if (owner === 'gc') this._makeCollectable();
  }

  /** The op that produced this tensor, when it is part of a recorded graph. */
  get gradFn(): Node | null {
    return this._gradFn;
  }

  /** 'cpu' or 'cuda:N'. */
  get device(): Device {
    return deviceName(this._dev);
  }
  /** Number of dimensions. */
  get ndim(): number {
    return this.shape.length;
  }
  /** Number of dimensions (the same as ndim; like torch.Tensor.dim()). */
  dim(): number {
    return this.shape.length;
  }
  /** The size of dimension d (negative counts from the end), or the whole shape. */
  size(): number[];
  size(d: number): number;
  size(d?: number): number | number[] {
    if (d === undefined) return [...this.shape];
    return this.shape[sh.dimIndex('size', d, this.ndim)];
  }
  /** Bytes per element (4 for float32, 2 for bfloat16, 1 for bool, ...). */
  get itemsize(): number {
    return ITEMSIZE[this.dtype];
  }

  // ---- autograd ----

  /** Whether gradients flow to this tensor (set on leaves; results of ops inherit it). */
  get requiresGrad(): boolean {
    return this._requiresGrad || this.gradFn !== null;
  }
  /**
   * Turning it on needs a floating dtype (AutogradError otherwise); a non-leaf cannot turn it off (use
   * detach()).
   */
  set requiresGrad(on: boolean) {
    if (this.gradFn !== null && !on) {
      throw new AutogradError('requiresGrad', 'cannot turn off requiresGrad of a non-leaf tensor; use detach()');
    }
    if (on && !isFloating(this.dtype)) {
      throw new AutogradError('requiresGrad', `only floating point tensors can require gradients, got ${this.dtype}`);
    }
    this._requiresGrad = on;
  }
  /** Sets requiresGrad and returns this (like torch's requires_grad_()). */
  requiresGrad_(on = true): this {
    this.requiresGrad = on;
    return this;
  }
  /** True for tensors not produced by a recorded op (user-created tensors and parameters). */
  get isLeaf(): boolean {
    return this.gradFn === null;
  }

  /**
   * Computes gradients of this tensor with respect to the graph's leaves and accumulates them into
   * their .grad. A non-scalar tensor needs `gradient` (same shape). The graph's saved tensors are
   * freed afterwards unless retainGraph is true. Options may come first: `backward({ retainGraph: true })`.
   */
  backward(opts?: BackwardOptions): void;
  backward(gradient?: Tensor | null, opts?: BackwardOptions): void;
  backward(gradientOrOpts?: Tensor | null | BackwardOptions, opts: BackwardOptions = {}): void {
    this._check('backward');
    let gradient: Tensor | undefined;
    if (gradientOrOpts instanceof Tensor) gradient = gradientOrOpts;
    else if (gradientOrOpts !== undefined && gradientOrOpts !== null) {
      if (typeof gradientOrOpts !== 'object' || Array.isArray(gradientOrOpts)) {
        throw new ValueError('backward', `expected a gradient tensor or an options object { retainGraph }, got ${describe(gradientOrOpts)}`);
      }
      opts = gradientOrOpts;
    }
    if (typeof opts !== 'object' || opts === null) {
      throw new ValueError('backward', `expected an options object { retainGraph }, got ${describe(opts)}`);
    }
    const unknown = Object.keys(opts).filter((k) => k !== 'retainGraph');
    if (unknown.length) throw new ValueError('backward', `unknown option ${unknown.join(', ')} (known: retainGraph)`);
    if (opts.retainGraph !== undefined && typeof opts.retainGraph !== 'boolean') {
      throw new ValueError('backward', `retainGraph must be a boolean, got ${describe(opts.retainGraph)}`);
    }
    runBackward(this, gradient, opts.retainGraph ?? false);
  }

  /** A tensor sharing this one's data, cut from the graph. */
  detach(): Tensor {
    this._check('detach');
    const t = this._viewAs(this.shape, this.strides, this.offset);
    return t;
  }

  /** Keeps .grad for this non-leaf tensor during backward. */
  retainGrad(): void {
    if (this.gradFn && !this.gradFn.retainers.some((r) => r.deref() === this)) this.gradFn.retainers.push(new WeakRef(this));
  }

  /** Calls hook with this tensor's gradient during backward; a returned tensor replaces the gradient. */
  registerHook(hook: (grad: Tensor) => Tensor | void): HookHandle {
    const list = this.gradFn ? this.gradFn.hooks : this._gradHooks;
    list.push(hook);
    return { remove: () => void list.splice(list.indexOf(hook) >>> 0, 1) };
  }

  /** Calls hook(this) after a gradient was accumulated into this leaf's .grad (used by data-parallel training). */
  registerPostAccumulateGradHook(hook: (t: Tensor) => void): HookHandle {
    if (!this.isLeaf) throw new AutogradError('registerPostAccumulateGradHook', 'only leaf tensors accumulate gradients');
    this._postAccumulateHooks.push(hook);
    const list = this._postAccumulateHooks;
    return { remove: () => void list.splice(list.indexOf(hook) >>> 0, 1) };
  }

  /** @internal Makes this tensor the output of graph node n (which it keeps alive until disposed). */
  _setGradFn(n: Node): void {
    n.life.refs++;
    this._gradFn = n;
    if (this._collectable) graphRegistry.register(this, n.life, this);
  }

  /**
   * @internal Puts this tensor in the garbage collector's care (the safety net above): for tensors
   * outside every tidy scope, and those a scope hands out (its result at top level, keep()).
   */
  _makeCollectable(): void {
    if (this._collectable || this._disposed) return;
    this._collectable = true;
    handleRegistry.register(this, this._h, this);
    if (this._gradFn) graphRegistry.register(this, this._gradFn.life, this);
  }

  // ---- memory ----

  /**
   * Frees this handle's reference to the native storage now (views and the graph keep their own),
   * and the gradient accumulated in .grad (take it first, `const g = t.grad; t.grad = null`, to keep
   * it). A tensor produced by a recorded op also lets go of its graph: once no live tensor leads to a
   * graph node, the tensors that node saved for backward are freed (as PyTorch frees a graph whose
   * output is dropped).
   */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    const grad = this.grad;
    if (grad) {
      this.grad = null;
      grad.dispose();
    }
    if (this._collectable) handleRegistry.unregister(this);
    native.dispose(this._h);
    const n = this._gradFn;
    if (n) {
      this._gradFn = null;
      if (this._collectable) graphRegistry.unregister(this);
      n.life.unref();
    }
  }
  /** dispose(), for `using t = kiln.zeros([2])` declarations. */
  [Symbol.dispose](): void {
    this.dispose();
  }
  /** True once dispose() ran (by hand, by tidy() or by using); any op on it throws DisposedError. */
  get isDisposed(): boolean {
    return this._disposed;
  }

  /** @internal Throws DisposedError when this tensor was disposed. */
  _check(op: string): void {
    if (this._disposed) throw new DisposedError(op, `tensor of shape [${this.shape.join(', ')}] was disposed`);
  }

  /** @internal A new tensor viewing this one's storage with other metadata (no autograd). */
  _viewAs(shape: readonly number[], strides: readonly number[], offset: number): Tensor {
    const h = native.view(this._h, shape as number[], strides as number[], offset);
    const t = new Tensor(h, shape, strides, offset, this.dtype, this._dev);
    t._isView = true;
    return t;
  }

  /**
   * How many in-place writes this tensor's storage has had (views share the count), like torch's
   * `_version`. Backward refuses to use a saved tensor whose version changed after it was saved.
   */
  get _version(): number {
    this._check('_version');
    return native.version(this._h);
  }

  /**
   * @internal A second native handle on this view's storage, for another Tensor object that shares
   * it (a Parameter made from a tensor, a module's parameter moved in place); its holder disposes it.
   */
  _aliasHandle(): NativeHandle {
    this._check('alias');
    return native.alias(this._h);
  }

  /** @internal Whether this tensor and other view one storage (views, tied weights). */
  _sharesStorage(other: Tensor): boolean {
    return native.sameStorage(this._h, other._h);
  }

  /** @internal Points this tensor at handle h (of the same metadata's storage), releasing the old one. */
  _replaceHandle(h: NativeHandle): void {
    if (this._collectable) handleRegistry.unregister(this);
    native.dispose(this._h);
    this._h = h;
    if (this._collectable) handleRegistry.register(this, h, this);
  }

  /** @internal Records an in-place write into this tensor's storage. */
  _bumpVersion(): void {
    native.bumpVersion(this._h);
  }

  /**
   * @internal A second handle on this view, outside every tidy scope, for autograd: 'graph' for the
   * tensors a node saves (the node always disposes them: its output's dispose or collection unrefs
   * it), 'gc' for gradients in flight.
   */
  _aliasForGraph(owner: 'gc' | 'graph' = 'gc'): Tensor {
    this._check('autograd');
    const t = new Tensor(native.alias(this._h), this.shape, this.strides, this.offset, this.dtype, this._dev, owner);
    t._isView = this._isView;
    return t;
  }

  /** @internal */
  _onesLike(): Tensor {
    return creation.onesLike(this);
  }

  // ---- reading back ----

  /** The elements, row-major, as a flat TypedArray (bfloat16/float16 come back as Float32Array). */
  dataSync(): Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array {
    return this._readFlat('dataSync');
  }

  /** The elements as a flat TypedArray; op names the caller in errors. */
  private _readFlat(op: string): Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array {
    this._check(op);
    if (this.numel > MAX_HOST_ARRAY_LENGTH) {
      throw new ValueError(op, `a tensor of shape [${this.shape.join(', ')}] has ${this.numel} elements; a JavaScript ` +
        `array holds at most 2^32 - 1: read it in parts (narrow, slice, select)`);
    }
    if (this.dtype === 'bfloat16' || this.dtype === 'float16') {
      const f = this.to('float32');
      try {
        return f.dataSync() as Float32Array;
      } finally {
        f.dispose();
      }
    }
    const buf = this._bytes(op);
    switch (this.dtype) {
      case 'float32': return new Float32Array(buf);
      case 'float64': return new Float64Array(buf);
      case 'int32': return new Int32Array(buf);
      case 'int64': return new BigInt64Array(buf);
      default: return new Uint8Array(buf);
    }
  }

  /**
   * @internal The elements, row-major in this tensor's dtype, in a new ArrayBuffer; OutOfMemoryError
   * naming op when JavaScript cannot allocate it.
   */
  _bytes(op: string): ArrayBuffer {
    this._check(op);
    const n = this.numel * this.itemsize;
    const buf = hostAlloc(
      op,
      () => `could not allocate a JavaScript buffer of ${n} bytes for a tensor of shape [${this.shape.join(', ')}] (${this.dtype})`,
      () => new ArrayBuffer(n),
    );
    native.readBytes(this._h, buf);
    return buf;
  }

  /** The elements as nested JavaScript arrays (numbers; booleans for bool tensors). */
  toArray(): NestedArray {
    const flat = this._readFlat('toArray');
    const get: (i: number) => number | boolean =
      this.dtype === 'bool' ? (i) => flat[i] !== 0 : this.dtype === 'int64' ? (i) => Number(flat[i]) : (i) => flat[i] as number;
    if (this.ndim === 0) return get(0);
    let pos = 0;
    const build = (d: number): NestedArray[] => {
      const out: NestedArray[] = new Array(this.shape[d]);
      for (let i = 0; i < this.shape[d]; i++) out[i] = d === this.ndim - 1 ? get(pos++) : build(d + 1);
      return out;
    };
    return build(0);
  }

  /** The value of a one-element tensor. */
  item(): number {
    this._check('item');
    if (this.numel !== 1) {
      throw new ShapeError('item', `a tensor of shape [${this.shape.join(', ')}] has ${this.numel} elements; only one element can be converted to a number`);
    }
    const v = this.dataSync()[0];
    return typeof v === 'bigint' ? Number(v) : v;
  }

  /**
   * The values as PyTorch prints them (large tensors summarized), with shape, dtype and requiresGrad.
   */
  toString(): string {
    return formatTensor(this);
  }
  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return this._disposed ? `tensor(<disposed>, shape=[${this.shape.join(', ')}])` : formatTensor(this);
  }

  // ---- conversion ----

  /** Returns this tensor converted to another dtype or moved to another device (this when already so). */
  to(target: DType | Device | 'cuda' | { dtype?: DType; device?: string }): Tensor {
    const opts = typeof target === 'string' ? ((DTYPES as readonly string[]).includes(target) ? { dtype: target as DType } : { device: target }) : target;
    return creation.to(this, opts.dtype ?? this.dtype, opts.device ?? this.device);
  }
  /** A float32 copy (this when it is float32 already); like torch.Tensor.float(). */
  float(): Tensor { return this.to('float32'); }
  /** A float64 copy (this when it is float64 already). */
  double(): Tensor { return this.to('float64'); }
  /** A float16 copy (this when it is float16 already). */
  half(): Tensor { return this.to('float16'); }
  /** A bfloat16 copy (this when it is bfloat16 already). */
  bfloat16(): Tensor { return this.to('bfloat16'); }
  /** An int32 copy, truncating toward zero (this when it is int32 already). */
  int(): Tensor { return this.to('int32'); }
  /** An int64 copy, truncating toward zero (this when it is int64 already). */
  long(): Tensor { return this.to('int64'); }
  /** A bool copy: true where an element is non-zero (this when it is bool already). */
  bool(): Tensor { return this.to('bool'); }
  /** A copy in CPU memory (this when it is on the CPU already). */
  cpu(): Tensor { return this.to({ device: 'cpu' }); }
  /**
   * A copy on GPU index (this when it is there already); a DeviceError on a build or machine without
   * CUDA.
   */
  cuda(index = 0): Tensor { return this.to({ device: `cuda:${index}` }); }
  /** A copy with its own storage (differentiable). */
  clone(): Tensor { return creation.clone(this); }
  /**
   * True when the elements are laid out row-major with no gaps (what view() and the fast kernels want).
   */
  isContiguous(): boolean {
    if (this.numel === 0) return true;
    let expected = 1;
    for (let i = this.ndim - 1; i >= 0; i--) {
      if (this.shape[i] === 1) continue;
      if (this.strides[i] !== expected) return false;
      expected *= this.shape[i];
    }
    return true;
  }

  // ---- shape and views (lib/ops/shape.ts) ----
  /**
   * The same elements in another shape, given as sizes or one array (one size may be -1 and is
   * inferred): a view when the layout allows, else a copy (like torch.reshape).
   */
  reshape(...shape: number[] | [readonly number[]]): Tensor { return sh.reshape(this, sh.shapeArgs(shape)); }
  /**
   * Like reshape, but always a view sharing this storage: a ShapeError when the strides do not allow
   * one (call contiguous() first).
   */
  view(...shape: number[] | [readonly number[]]): Tensor { return sh.view(this, sh.shapeArgs(shape)); }
  /**
   * A view with the dims reordered: result dim i is dim dims[i] of this tensor (like
   * torch.Tensor.permute).
   */
  permute(...dims: number[] | [readonly number[]]): Tensor { return sh.permute(this, sh.shapeArgs(dims)); }
  /** A view with dims d0 and d1 swapped (negative dims count from the end). */
  transpose(d0: number, d1: number): Tensor { return sh.transpose(this, d0, d1); }
  /** Transpose of a 2-D tensor (like torch's .t()). */
  t(): Tensor { return sh.t(this); }
  /** Swaps the last two dimensions. */
  get mT(): Tensor { return sh.transpose(this, -2, -1); }
  /**
   * A view broadcast to shape without copying: size-1 dims stretch (stride 0), -1 keeps a size, new
   * dims go in front (like torch.Tensor.expand). Write into it only after clone().
   */
  expand(...shape: number[] | [readonly number[]]): Tensor { return sh.expand(this, sh.shapeArgs(shape)); }
  /** expand() to other's shape. */
  expandAs(other: Tensor): Tensor { return sh.expand(this, other.shape); }
  /** expand() to shape (like torch.broadcast_to). */
  broadcastTo(shape: readonly number[]): Tensor { return sh.expand(this, shape); }
  /** A view without size-1 dims: all of them, or only the given dim(s) when they have size 1. */
  squeeze(dim?: number | readonly number[]): Tensor { return sh.squeeze(this, dim); }
  /** A view with a new size-1 dim at position dim (negative counts from the end of the result). */
  unsqueeze(dim: number): Tensor { return sh.unsqueeze(this, dim); }
  /**
   * Dims startDim..endDim (inclusive) merged into one; a view when the layout allows (like
   * torch.flatten).
   */
  flatten(startDim = 0, endDim = -1): Tensor { return sh.flatten(this, startDim, endDim); }
  /** Dim dim split into sizes (one may be -1); the inverse of flatten. */
  unflatten(dim: number, sizes: readonly number[]): Tensor { return sh.unflatten(this, dim, sizes); }
  /** A view of length elements along dim, starting at start (like torch.narrow). */
  narrow(dim: number, start: number, length: number): Tensor { return sh.narrow(this, dim, start, length); }
  /** Elements start..end (exclusive) with step along dim, as a view (negative start/end count from the end). */
  slice(dim: number, start?: number, end?: number, step = 1): Tensor { return sh.slice(this, dim, start, end, step); }
  /** The sub-tensor at index along dim, without that dim. */
  select(dim: number, index: number): Tensor { return sh.select(this, dim, index); }
  /** This tensor when it is contiguous, else a row-major copy (gradients pass through). */
  contiguous(): Tensor { return sh.contiguous(this); }
  /**
   * Views along dim: pieces of size sizeOrSections (the last may be shorter), or of the listed sizes
   * (like torch.split).
   */
  split(sizeOrSections: number | readonly number[], dim = 0): Tensor[] { return sh.split(this, sizeOrSections, dim); }
  /** At most chunks views of equal size along dim (the last may be smaller), like torch.chunk. */
  chunk(chunks: number, dim = 0): Tensor[] { return sh.chunk(this, chunks, dim); }
  /**
   * A copy tiled reps[i] times along each dim (reps may have more dims than this tensor; like
   * torch.Tensor.repeat).
   */
  repeat(...reps: number[] | [readonly number[]]): Tensor { return sh.repeat(this, sh.shapeArgs(reps)); }

  // ---- elementwise (lib/ops/elementwise.ts) ----
  /** this + alpha * other, broadcasting (see kiln.add). */
  add(other: TensorOrScalar, alpha?: number): Tensor { return ew.add(this, other, alpha); }
  /** this - alpha * other, broadcasting (see kiln.sub). */
  sub(other: TensorOrScalar, alpha?: number): Tensor { return ew.sub(this, other, alpha); }
  /** this * other, broadcasting (see kiln.mul). */
  mul(other: TensorOrScalar): Tensor { return ew.mul(this, other); }
  /** this / other, true division: integer operands give float32 (see kiln.div). */
  div(other: TensorOrScalar): Tensor { return ew.div(this, other); }
  /** this ** exponent elementwise, broadcasting (see kiln.pow). */
  pow(exponent: TensorOrScalar): Tensor { return ew.pow(this, exponent); }
  /** The elementwise maximum with other (see kiln.maximum). */
  maximum(other: TensorOrScalar): Tensor { return ew.maximum(this, other); }
  /** The elementwise minimum with other (see kiln.minimum). */
  minimum(other: TensorOrScalar): Tensor { return ew.minimum(this, other); }
  /** -this (see kiln.neg). */
  neg(): Tensor { return ew.neg(this); }
  /** e^this (see kiln.exp). */
  exp(): Tensor { return ew.exp(this); }
  /** Natural logarithm (see kiln.log). */
  log(): Tensor { return ew.log(this); }
  /** log(1 + this), accurate for small values (see kiln.log1p). */
  log1p(): Tensor { return ew.log1p(this); }
  /** Square root (see kiln.sqrt). */
  sqrt(): Tensor { return ew.sqrt(this); }
  /** 1 / sqrt(this) (see kiln.rsqrt). */
  rsqrt(): Tensor { return ew.rsqrt(this); }
  /** this * this (see kiln.square). */
  square(): Tensor { return ew.square(this); }
  /** 1 / this (see kiln.reciprocal). */
  reciprocal(): Tensor { return ew.reciprocal(this); }
  /** Absolute values (see kiln.abs). */
  abs(): Tensor { return ew.abs(this); }
  /** -1, 0 or 1 by sign (see kiln.sign). */
  sign(): Tensor { return ew.sign(this); }
  /** Sine (see kiln.sin). */
  sin(): Tensor { return ew.sin(this); }
  /** Cosine (see kiln.cos). */
  cos(): Tensor { return ew.cos(this); }
  /** Hyperbolic tangent (see kiln.tanh). */
  tanh(): Tensor { return ew.tanh(this); }
  /** Logistic sigmoid (see kiln.sigmoid). */
  sigmoid(): Tensor { return ew.sigmoid(this); }
  /** max(this, 0) (see kiln.relu). */
  relu(): Tensor { return ew.relu(this); }
  /** GELU, exact or with the tanh approximation (see kiln.gelu). */
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor { return ew.gelu(this, approximate); }
  /** this * sigmoid(this) (see kiln.silu). */
  silu(): Tensor { return ew.silu(this); }
  /** Rounded down (see kiln.floor). */
  floor(): Tensor { return ew.floor(this); }
  /** Rounded up (see kiln.ceil). */
  ceil(): Tensor { return ew.ceil(this); }
  /** Rounded half to even (see kiln.round). */
  round(): Tensor { return ew.round(this); }
  /** Limited to [min, max], either bound optional (see kiln.clamp). */
  clamp(min?: number | null, max?: number | null): Tensor { return ew.clamp(this, min, max); }
  /** this == other as a bool tensor (see kiln.eq). */
  eq(other: TensorOrScalar): Tensor { return ew.eq(this, other); }
  /** this != other as a bool tensor (see kiln.ne). */
  ne(other: TensorOrScalar): Tensor { return ew.ne(this, other); }
  /** this < other as a bool tensor (see kiln.lt). */
  lt(other: TensorOrScalar): Tensor { return ew.lt(this, other); }
  /** this <= other as a bool tensor (see kiln.le). */
  le(other: TensorOrScalar): Tensor { return ew.le(this, other); }
  /** this > other as a bool tensor (see kiln.gt). */
  gt(other: TensorOrScalar): Tensor { return ew.gt(this, other); }
  /** this >= other as a bool tensor (see kiln.ge). */
  ge(other: TensorOrScalar): Tensor { return ew.ge(this, other); }
  /** True where this is zero (see kiln.logicalNot). */
  logicalNot(): Tensor { return ew.logicalNot(this); }
  /** True where both are non-zero (see kiln.logicalAnd). */
  logicalAnd(other: Tensor): Tensor { return ew.logicalAnd(this, other); }
  /** True where either is non-zero (see kiln.logicalOr). */
  logicalOr(other: Tensor): Tensor { return ew.logicalOr(this, other); }
  /** Elements of this where cond is true, of other elsewhere. */
  where(cond: Tensor, other: TensorOrScalar): Tensor { return ew.where(cond, this, other); }
  /** A copy with value where mask (bool, broadcastable to this shape) is true (see kiln.maskedFill). */
  maskedFill(mask: Tensor, value: number): Tensor { return ew.maskedFill(this, mask, value); }
  /** In place: this += alpha * other. */
  add_(other: TensorOrScalar, alpha?: number): this { ew.add_(this, other, alpha); return this; }
  /** In place: this -= alpha * other; returns this (see kiln.sub_). */
  sub_(other: TensorOrScalar, alpha?: number): this { ew.sub_(this, other, alpha); return this; }
  /** In place: this *= other; returns this (see kiln.mul_). */
  mul_(other: TensorOrScalar): this { ew.mul_(this, other); return this; }
  /** In place: this /= other; returns this (see kiln.div_). */
  div_(other: TensorOrScalar): this { ew.div_(this, other); return this; }
  /** In place: copies src (broadcast to this shape, converted to this dtype) into this. */
  copy_(src: Tensor): this { creation.copy_(this, src); return this; }
  /** In place: every element becomes value; returns this (not recorded by autograd). */
  fill_(value: number): this { creation.fill_(this, value); return this; }
  /** In place: every element becomes 0; returns this (like torch.Tensor.zero_). */
  zero_(): this { creation.fill_(this, 0); return this; }

  // ---- reductions (lib/ops/reduce.ts) ----
  /** Sum over dims, all by default (see kiln.sum). */
  sum(dim?: number | readonly number[], keepdim = false): Tensor { return red.sum(this, dim, keepdim); }
  /** Mean over dims, all by default (see kiln.mean). */
  mean(dim?: number | readonly number[], keepdim = false): Tensor { return red.mean(this, dim, keepdim); }
  /** Largest values over dims, all by default; values only, like torch.amax (see kiln.max). */
  max(dim?: number | readonly number[], keepdim = false): Tensor { return red.max(this, dim, keepdim); }
  /** Smallest values over dims, all by default; values only, like torch.amin (see kiln.min). */
  min(dim?: number | readonly number[], keepdim = false): Tensor { return red.min(this, dim, keepdim); }
  /** Index of the first largest element along dim, or in the flattened tensor (see kiln.argmax). */
  argmax(dim?: number, keepdim = false): Tensor { return red.argmax(this, dim, keepdim); }
  /** Index of the first smallest element along dim, or in the flattened tensor (see kiln.argmin). */
  argmin(dim?: number, keepdim = false): Tensor { return red.argmin(this, dim, keepdim); }
  /** Variance with Bessel's correction by default (correction = 1, like torch.var). */
  var(dim?: number | readonly number[], opts: VarianceOptions = {}): Tensor { return red.variance(this, dim, opts); }
  /** Standard deviation over dims with correction 1 by default (see kiln.std). */
  std(dim?: number | readonly number[], opts: VarianceOptions = {}): Tensor { return red.std(this, dim, opts); }
  /** log(sum(exp(this))) over dims, computed stably (see kiln.logsumexp). */
  logsumexp(dim: number | readonly number[], keepdim = false): Tensor { return red.logsumexp(this, dim, keepdim); }
  /** Whether every element over dims is non-zero, as bool (see kiln.all). */
  all(dim?: number | readonly number[], keepdim = false): Tensor { return red.all(this, dim, keepdim); }
  /** Whether some element over dims is non-zero, as bool (see kiln.any). */
  any(dim?: number | readonly number[], keepdim = false): Tensor { return red.any(this, dim, keepdim); }

  // ---- matmul, softmax, norm, indexing, random ----
  /** Matrix product with other, batched and broadcasting like torch.matmul (see kiln.matmul). */
  matmul(other: Tensor): Tensor { return mm.matmul(this, other); }
  /** Softmax along dim (see kiln.softmax). */
  softmax(dim = -1): Tensor { return sm.softmax(this, dim); }
  /** Log-softmax along dim (see kiln.logSoftmax). */
  logSoftmax(dim = -1): Tensor { return sm.logSoftmax(this, dim); }
  /** Entries picked along dim by index (see kiln.gather). */
  gather(dim: number, index: Tensor): Tensor { return idx.gather(this, dim, index); }
  /** The slices at positions index along dim (see kiln.indexSelect). */
  indexSelect(dim: number, index: Tensor): Tensor { return idx.indexSelect(this, dim, index); }
  /** A copy with src added at the positions index gives along dim (see kiln.scatterAdd). */
  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor { return idx.scatterAdd(this, dim, index, src); }
  /** Layer normalization over the last dims normalizedShape (see kiln.layerNorm). */
  layerNorm(normalizedShape: number | readonly number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
    return norm.layerNorm(this, normalizedShape, weight, bias, eps);
  }
  /** Dropout with probability p while training (see kiln.dropout). */
  dropout(p = 0.5, training = true): Tensor { return rand.dropout(this, p, training); }
}

/** @internal Wraps a fresh native handle with contiguous strides. */
export function fromHandle(h: NativeHandle, shape: readonly number[], dtype: DType, dev: number): Tensor {
  const strides = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = acc;
    acc *= Math.max(shape[i], 1);
  }
  return new Tensor(h, shape, strides, 0, dtype, dev);
}

/**
 * @internal A new contiguous tensor on device dev holding bytes: its elements, row-major in dtype
 * (exactly shape's element count of them; the addon checks).
 */
export function tensorFromBytes(bytes: ArrayBufferView, shape: readonly number[], dtype: DType, dev: number): Tensor {
  return fromHandle(native.fromBytes(bytes, shape as number[], DTYPE_CODE[dtype], dev), shape, dtype, dev);
}

/** @internal A new uninitialized contiguous tensor. */
export function emptyTensor(shape: readonly number[], dtype: DType, dev: number): Tensor {
  return fromHandle(native.empty(shape as number[], DTYPE_CODE[dtype], dev), shape, dtype, dev);
}

