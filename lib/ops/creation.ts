// Creating tensors (from arrays and TypedArrays, zeros/ones/full/arange/linspace/eye and the *Like
// forms), conversion between dtypes and devices, clone, and the in-place copy_/fill_.
import { recordOp } from '../autograd/engine';
import { isGradEnabled } from '../autograd/grad_mode';
import { DType, ITEMSIZE, checkDType, isFloating } from '../dtype';
import { deviceCode } from '../device';
import { AutogradError, DTypeError, OutOfMemoryError, ShapeError, ValueError } from '../errors';
import { native } from '../native';
import { checkShape, numel, sameShape, shapeStr } from '../shape';
import { NestedArray, Tensor, emptyTensor, tensorFromBytes } from '../tensor';
import { MAX_HOST_ARRAY_LENGTH, hostAlloc } from '../memory';
import { expand } from './shape';

/**
 * Options of the creation functions (like the dtype=, device=, requires_grad= keywords of torch.zeros).
 */
export interface TensorOptions {
  /**
   * Element type; each function says its default (float32 for most; the *Like functions take the source
   * tensor's).
   */
  dtype?: DType;
  /** 'cpu' (default) or 'cuda:N'. */
  device?: string;
  /**
   * Make the new tensor a leaf that requires grad, so backward() fills its .grad (floating dtypes only;
   * default false).
   */
  requiresGrad?: boolean;
}

type FlatData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Int16Array | Uint16Array | Uint32Array | Uint8ClampedArray;

function finish(t: Tensor, opts: TensorOptions): Tensor {
  if (opts.requiresGrad) t.requiresGrad = true;
  return t;
}

function dtypeOfTypedArray(a: FlatData): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Uint8Array) return 'float32';
  return a instanceof Uint32Array ? 'int64' : 'int32';
}

/** Converts flat values to the byte layout of dtype. */
function encode(op: string, values: ArrayLike<number | bigint | boolean>, dtype: DType): ArrayBufferView {
  const n = values.length;
  switch (dtype) {
    case 'float32': return Float32Array.from(values as ArrayLike<number>, Number);
    case 'float64': return Float64Array.from(values as ArrayLike<number>, Number);
    case 'int32': return Int32Array.from(values as ArrayLike<number>, (v) => Math.trunc(Number(v)));
    case 'int64': {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (typeof v === 'bigint') out[i] = v;
        else {
          const x = Number(v);
          if (!Number.isFinite(x)) throw new ValueError(op, `cannot store ${x} in an int64 tensor`);
          out[i] = BigInt(Math.trunc(x));
        }
      }
      return out;
    }
    case 'bool': return Uint8Array.from(values as ArrayLike<number>, (v) => (v ? 1 : 0));
    case 'bfloat16':
    case 'float16': return Float32Array.from(values as ArrayLike<number>, Number);
  }
}

/** A zeroed Float64Array for op's n values; OutOfMemoryError when JavaScript cannot hold it. */
function hostValues(op: string, n: number): Float64Array {
  const what = `cannot build ${n} values (${n * 8} bytes) in JavaScript memory`;
  if (n > MAX_HOST_ARRAY_LENGTH) throw new OutOfMemoryError(op, `${what}; at most ${MAX_HOST_ARRAY_LENGTH} fit in one array`);
  return hostAlloc(op, () => what, () => new Float64Array(n));
}

/** Creates a tensor from a contiguous flat buffer of values. */
function fromFlat(op: string, values: ArrayLike<number | bigint | boolean>, shape: number[], dtype: DType, device: string): Tensor {
  const dev = deviceCode(op, device);
  const half = dtype === 'bfloat16' || dtype === 'float16';
  const storeAs: DType = half ? 'float32' : dtype;
  const n = values.length;
  const bytes = hostAlloc(op, () => `cannot build ${n} values (${n * ITEMSIZE[storeAs]} bytes) in JavaScript memory`, () => encode(op, values, dtype));
  const t = tensorFromBytes(bytes, shape, storeAs, -1);
  if (!half && dev === -1) return t;
  const out = to(t, dtype, device);
  t.dispose();
  return out;
}

function inferShape(op: string, data: NestedArray): number[] {
  const shape: number[] = [];
  let cur: NestedArray = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0];
  }
  return shape;
}

function flatten(op: string, data: NestedArray, shape: number[]): Array<number | boolean> {
  const out: Array<number | boolean> = [];
  const walk = (v: NestedArray, d: number) => {
    if (d === shape.length) {
      if (Array.isArray(v)) throw new ShapeError(op, `ragged nested array: expected shape ${shapeStr(shape)}`);
      if (typeof v !== 'number' && typeof v !== 'boolean') throw new ValueError(op, `unsupported element ${JSON.stringify(v)}`);
      out.push(v);
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[d]) throw new ShapeError(op, `ragged nested array: expected shape ${shapeStr(shape)}`);
    for (const x of v) walk(x, d + 1);
  };
  walk(data, 0);
  return out;
}

/**
 * A tensor from nested arrays, a number, or a flat TypedArray (with opts.shape, default 1-D).
 * The dtype defaults like PyTorch: float32 for numbers with fractions, int64 for whole numbers,
 * bool for booleans; a TypedArray gives its own type (Float32Array: float32, Int32Array: int32, ...).
 */
export function tensor(data: NestedArray | FlatData, opts: TensorOptions & { shape?: readonly number[] } = {}): Tensor {
  const op = 'tensor';
  if (ArrayBuffer.isView(data)) {
    const shape = opts.shape ? checkShape(op, opts.shape) : [data.length];
    if (numel(shape) !== data.length) throw new ShapeError(op, `shape ${shapeStr(shape)} needs ${numel(shape)} values, got ${data.length}`);
    const dtype = opts.dtype ? checkDType(op, opts.dtype) : dtypeOfTypedArray(data);
    return finish(fromFlat(op, data as ArrayLike<number | bigint>, shape, dtype, opts.device ?? 'cpu'), opts);
  }
  const shape = inferShape(op, data);
  const flat = flatten(op, data, shape);
  let dtype = opts.dtype ? checkDType(op, opts.dtype) : undefined;
  if (!dtype) {
    if (flat.length > 0 && flat.every((v) => typeof v === 'boolean')) dtype = 'bool';
    else if (flat.length > 0 && flat.every((v) => typeof v === 'boolean' || Number.isInteger(v))) dtype = 'int64';
    else dtype = 'float32';
  }
  const t = fromFlat(op, flat, opts.shape ? checkShape(op, opts.shape) : shape, dtype, opts.device ?? 'cpu');
  return finish(t, opts);
}

/** A 0-dimensional tensor holding value. */
export function scalar(value: number, opts: TensorOptions = {}): Tensor {
  return full([], value, opts);
}

/** An uninitialized tensor. */
export function empty(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  const dtype = checkDType('empty', opts.dtype ?? 'float32');
  return finish(emptyTensor(checkShape('empty', shape), dtype, deviceCode('empty', opts.device ?? 'cpu')), opts);
}

/** A tensor of shape filled with value; op names the caller in errors. */
function filled(op: string, shape: readonly number[], value: number, opts: TensorOptions): Tensor {
  const dtype = checkDType(op, opts.dtype ?? (typeof value === 'boolean' ? 'bool' : 'float32'));
  const t = emptyTensor(checkShape(op, shape), dtype, deviceCode(op, opts.device ?? 'cpu'));
  native.fill(t._h, Number(value));
  return finish(t, opts);
}

/** A tensor of shape filled with value (float32 unless opts.dtype says otherwise; like torch.full). */
export function full(shape: readonly number[], value: number, opts: TensorOptions = {}): Tensor {
  return filled('full', shape, value, opts);
}

/**
 * A tensor of shape filled with zeros (float32 unless opts.dtype says otherwise; like torch.zeros).
 * Sizes must be non-negative integers: a bad size, or more than 2^53 - 1 elements, is a ShapeError;
 * more bytes than can be allocated, an OutOfMemoryError.
 */
export function zeros(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  return filled('zeros', shape, 0, opts);
}

/** A tensor of shape filled with ones (float32 unless opts.dtype says otherwise; like torch.ones). */
export function ones(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  return filled('ones', shape, 1, opts);
}

function likeOpts(t: Tensor, opts: TensorOptions): TensorOptions {
  return { dtype: opts.dtype ?? t.dtype, device: opts.device ?? t.device, requiresGrad: opts.requiresGrad };
}
/** An uninitialized tensor of t's shape, dtype and device (opts override the dtype and device). */
export function emptyLike(t: Tensor, opts: TensorOptions = {}): Tensor { return empty(t.shape, likeOpts(t, opts)); }
/** Zeros of t's shape, dtype and device (opts override the dtype and device; like torch.zeros_like). */
export function zerosLike(t: Tensor, opts: TensorOptions = {}): Tensor { return zeros(t.shape, likeOpts(t, opts)); }
/** Ones of t's shape, dtype and device (opts override the dtype and device; like torch.ones_like). */
export function onesLike(t: Tensor, opts: TensorOptions = {}): Tensor { return ones(t.shape, likeOpts(t, opts)); }
/** value in t's shape, dtype and device (opts override the dtype and device; like torch.full_like). */
export function fullLike(t: Tensor, value: number, opts: TensorOptions = {}): Tensor { return full(t.shape, value, likeOpts(t, opts)); }

/**
 * Values from start (inclusive) to end (exclusive) by step, like torch.arange; arange(n) is 0..n-1.
 * The dtype is int64 when all arguments are whole numbers, float32 otherwise.
 */
export function arange(start: number, end?: number, step = 1, opts: TensorOptions = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  if (step === 0 || !Number.isFinite(step)) throw new ValueError('arange', `step must be a finite non-zero number, got ${step}`);
  if (!Number.isFinite(start) || !Number.isFinite(end)) throw new ValueError('arange', `start and end must be finite numbers, got ${start} and ${end}`);
  const n = Math.max(0, Math.ceil((end - start) / step));
  const whole = [start, end, step].every(Number.isInteger);
  const dtype = opts.dtype ?? (whole ? 'int64' : 'float32');
  const vals = hostValues('arange', n);
  for (let i = 0; i < n; i++) vals[i] = start + i * step;
  return finish(fromFlat('arange', vals, [n], dtype, opts.device ?? 'cpu'), opts);
}

/** steps evenly spaced values from start to end inclusive. */
export function linspace(start: number, end: number, steps: number, opts: TensorOptions = {}): Tensor {
  if (!Number.isInteger(steps) || steps < 0) throw new ValueError('linspace', `steps must be a non-negative integer, got ${steps}`);
  const vals = hostValues('linspace', steps);
  const h = steps > 1 ? (end - start) / (steps - 1) : 0;
  for (let i = 0; i < steps; i++) vals[i] = i === steps - 1 && steps > 1 ? end : start + i * h;
  return finish(fromFlat('linspace', vals, [steps], opts.dtype ?? 'float32', opts.device ?? 'cpu'), opts);
}

/** An n x m matrix with ones on the diagonal. */
export function eye(n: number, m = n, opts: TensorOptions = {}): Tensor {
  checkShape('eye', [n, m]);
  const vals = hostValues('eye', n * m);
  for (let i = 0; i < Math.min(n, m); i++) vals[i * m + i] = 1;
  return finish(fromFlat('eye', vals, [n, m], opts.dtype ?? 'float32', opts.device ?? 'cpu'), opts);
}

/** x converted to dtype on device; x itself when nothing changes. Differentiable between float dtypes. */
export function to(x: Tensor, dtype: DType, device: string): Tensor {
  x._check('to');
  checkDType('to', dtype);
  const dev = deviceCode('to', device);
  if (dtype === x.dtype && dev === x._dev) return x;
  if (dev !== x._dev && dev !== -1 && x._dev !== -1) throw new DTypeError('to', 'copies between two GPUs are not supported');
  const out = emptyTensor(x.shape, dtype, dev);
  native.copy(x._h, out._h);
  if (isFloating(dtype) && isFloating(x.dtype)) {
    const from = x.dtype, fromDev = x.device;
    recordOp('to', [x], out, [], (g) => [to(g, from, fromDev)]);
  }
  return out;
}

/** A contiguous copy with its own storage; gradients pass through. */
export function clone(x: Tensor): Tensor {
  x._check('clone');
  const out = emptyTensor(x.shape, x.dtype, x._dev);
  native.copy(x._h, out._h);
  return recordOp('clone', [x], out, [], (g) => [g]);
}

/** @internal Copies src into a fresh contiguous tensor of x's shape (no autograd): used by views. */
export function contiguousCopy(x: Tensor): Tensor {
  const out = emptyTensor(x.shape, x.dtype, x._dev);
  native.copy(x._h, out._h);
  return out;
}

/**
 * @internal Throws unless x may be written in place (not disposed; not a leaf requiring grad while
 * recording). Every in-place op calls x._bumpVersion() after writing, so that autograd can tell when
 * a tensor it saved for backward was changed.
 */
export function checkInPlace(op: string, x: Tensor, src?: Tensor | null): void {
  x._check(op);
  if (!isGradEnabled()) return;
  if (x.requiresGrad && x.isLeaf) {
    throw new ValueError(op, 'a leaf tensor that requires grad is used in an in-place operation; wrap it in noGrad()');
  }
  if (x.requiresGrad || src?.requiresGrad) {
    throw new AutogradError(op, 'in-place ops are not recorded by autograd; use the out-of-place form, or noGrad() for updates');
  }
}

/** In place: x[...] = src broadcast to x's shape and converted to x's dtype. Not recorded by autograd. */
export function copy_(x: Tensor, src: Tensor): void {
  src._check('copy_');
  checkInPlace('copy_', x, src);
  if (sameShape(src.shape, x.shape)) {
    native.copy(src._h, x._h);
  } else {
    const e = expand(src, x.shape);
    try {
      native.copy(e._h, x._h);
    } finally {
      e.dispose();
    }
  }
  x._bumpVersion();
}

/** In place: every element of x becomes value. */
export function fill_(x: Tensor, value: number): void {
  checkInPlace('fill_', x);
  native.fill(x._h, value);
  x._bumpVersion();
}
