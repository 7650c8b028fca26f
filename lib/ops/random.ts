// Seeded random numbers and dropout. The generator is counter-based (Philox4x32-10, see
// native/core/philox.h): its whole state is a 64-bit seed and a 64-bit offset counting the 128-bit
// Philox blocks drawn so far. Every fill draws from (seed, offset) and advances the offset by the
// blocks it used, so a run repeats after manualSeed(), an element's value does not depend on the
// thread count, and getRngState()/setRngState() checkpoint and resume the stream exactly.
import { recordOp } from '../autograd/engine';
import { DType, checkDType, isFloating } from '../dtype';
import { deviceCode } from '../device';
import { DTypeError, ValueError } from '../errors';
import type { NativeHandle } from '../native';
import { checkShape } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import type { TensorOptions } from './creation';
import { zeros } from './creation';
import { bindKernels, defineOp, fillOutputs, kernelDTypes } from './dispatch';

const N = bindKernels('random', {
  randUniform: '(out:T, seed:u64, offset:u64, low:f, high:f) -> u64',
  randNormal: '(out:T, seed:u64, offset:u64, mean:f, std:f) -> u64',
  randInt: '(out:T, seed:u64, offset:u64, low:i, high:i) -> u64',
  dropout: '(x:T, p:f, seed:u64, offset:u64, out:T, mask:T) -> u64',
  dropoutBackward: '(grad:T, mask:T, scale:f, out:T) -> void',
});

/** The seed used until manualSeed() is called (PyTorch's default CPU seed). */
const DEFAULT_SEED = 67280421310721n;
let seed = DEFAULT_SEED;
let offset = 0n;

/** The generator state: decimal strings of the 64-bit seed and block offset (JSON-safe). */
export interface RngState {
  /** The 64-bit seed, as a decimal string. */
  seed: string;
  /** How many random blocks the stream has used since seeding, as a decimal string. */
  offset: string;
}

function u64(op: string, name: string, v: number | bigint | string): bigint {
  let b: bigint;
  try {
    b = BigInt(v);
  } catch {
    throw new ValueError(op, `${name} must be an integer, got ${JSON.stringify(String(v))}`);
  }
  if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new ValueError(op, `${name} must be a safe integer, got ${v}`);
  return b;
}

/** Seeds the generator and restarts its stream (like torch.manual_seed); negative seeds wrap modulo 2^64. */
export function manualSeed(s: number | bigint): void {
  seed = BigInt.asUintN(64, u64('manualSeed', 'seed', s));
  offset = 0n;
}

/** The seed of the current stream (like torch.initial_seed). */
export function initialSeed(): bigint {
  return seed;
}

/** A snapshot of the generator (for checkpoints). */
export function getRngState(): RngState {
  return { seed: seed.toString(), offset: offset.toString() };
}

/** Restores a state from getRngState(): the following draws repeat those made after the snapshot. */
export function setRngState(state: RngState): void {
  const op = 'setRngState';
  if (state === null || typeof state !== 'object') throw new ValueError(op, 'expects an object {seed, offset}');
  const s = u64(op, 'seed', state.seed), o = u64(op, 'offset', state.offset);
  const limit = 1n << 64n;
  if (s < 0n || s >= limit || o < 0n || o >= limit) throw new ValueError(op, `seed and offset must be in [0, 2^64), got ${s} and ${o}`);
  seed = s;
  offset = o;
}

/** Runs a native fill at the current (seed, offset) and advances the offset by the blocks it drew. */
function draw(fill: (seed: bigint, offset: bigint) => bigint): void {
  offset = BigInt.asUintN(64, offset + fill(seed, offset));
}

/** A fresh tensor for op to fill, of opts' dtype (default dflt) if the addon's kernel takes it on opts' device. */
function target(op: string, shape: readonly number[], dflt: DType, kernel: string, opts: TensorOptions): Tensor {
  const dtype = checkDType(op, opts.dtype ?? dflt);
  // Allocating first lets a device this build lacks fail as a DeviceError.
  const t = emptyTensor(checkShape(op, shape), dtype, deviceCode(op, opts.device ?? 'cpu'));
  const takes = kernelDTypes(kernel, t._dev);
  if (takes.includes(dtype)) return t;
  t.dispose();
  throw new DTypeError(op, `dtype ${dtype} is not supported (it takes ${takes.join(', ')})`);
}

/** Fills a fresh t from the stream (disposing it if the fill throws) and applies requiresGrad. */
function fillFrom(t: Tensor, opts: TensorOptions, fill: (h: NativeHandle, seed: bigint, offset: bigint) => bigint): Tensor {
  fillOutputs([t], () => {
    if (opts.requiresGrad) t.requiresGrad = true; // before drawing: an int tensor refuses it
    draw((s, o) => fill(t._h, s, o));
  });
  return t;
}

function checkFinite(op: string, values: Record<string, number>): void {
  for (const [k, v] of Object.entries(values)) {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ValueError(op, `${k} must be a finite number, got ${v}`);
  }
}

// The fills take no tensor: defineOp runs their checks (the dtype is checked against the kernel's
// coverage when the target is made).
type FillArgs = [shape: readonly number[], a: number, b: number, opts: TensorOptions];

const uniformOp = defineOp<FillArgs>({
  name: 'uniform',
  inputs: [],
  kernels: ['randUniform'],
  check(_shape, low, high) {
    checkFinite('uniform', { low, high });
    if (!(low < high)) throw new ValueError('uniform', `needs low < high, got low ${low}, high ${high}`);
  },
  forward(shape, low, high, opts) {
    const t = target('uniform', shape, 'float32', 'randUniform', opts);
    return fillFrom(t, opts, (h, s, o) => N.randUniform(h, s, o, low, high));
  },
});

/** Uniform values in [low, high) (like torch.empty(shape).uniform_(low, high)); floating dtypes. */
export function uniform(shape: readonly number[], low = 0, high = 1, opts: TensorOptions = {}): Tensor {
  return uniformOp(shape, low, high, opts);
}

const normalOp = defineOp<FillArgs>({
  name: 'normal',
  inputs: [],
  kernels: ['randNormal'],
  check(_shape, mean, std) {
    checkFinite('normal', { mean, std });
    if (std < 0) throw new ValueError('normal', `std must be >= 0, got ${std}`);
  },
  forward(shape, mean, std, opts) {
    const t = target('normal', shape, 'float32', 'randNormal', opts);
    return fillFrom(t, opts, (h, s, o) => N.randNormal(h, s, o, mean, std));
  },
});

/** Normal values with mean and std (like torch.empty(shape).normal_(mean, std)); floating dtypes. */
export function normal(shape: readonly number[], mean = 0, std = 1, opts: TensorOptions = {}): Tensor {
  return normalOp(shape, mean, std, opts);
}

/** Uniform values in [0, 1) (float32 unless opts.dtype says otherwise). */
export function rand(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  return uniform(shape, 0, 1, opts);
}

/** Standard normal values (float32 unless opts.dtype says otherwise). */
export function randn(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  return normal(shape, 0, 1, opts);
}

const randintOp = defineOp<FillArgs>({
  name: 'randint',
  inputs: [],
  kernels: ['randInt'],
  check(_shape, low, high, opts) {
    const op = 'randint';
    if (!Number.isSafeInteger(low) || !Number.isSafeInteger(high)) {
      throw new ValueError(op, `low and high must be safe integers, got ${low} and ${high}`);
    }
    if (low >= high) throw new ValueError(op, `needs low < high, got low ${low}, high ${high}`);
    if (opts.dtype === 'int32' && (low < -(2 ** 31) || high > 2 ** 31)) {
      throw new ValueError(op, `range [${low}, ${high}) does not fit in int32`);
    }
  },
  forward(shape, low, high, opts) {
    const t = target('randint', shape, 'int64', 'randInt', opts);
    return fillFrom(t, opts, (h, s, o) => N.randInt(h, s, o, low, high));
  },
});

/**
 * Integers uniform in [low, high) (int64 unless opts.dtype says otherwise). Each value comes from
 * 64 random bits by multiply-shift, without rejection: the bias is at most (high - low) / 2^64.
 */
export function randint(low: number, high: number, shape: readonly number[], opts: TensorOptions = {}): Tensor {
  return randintOp(shape, low, high, opts);
}

function likeOpts(op: string, t: Tensor, opts: TensorOptions): TensorOptions {
  t._check(op);
  return { dtype: opts.dtype ?? t.dtype, device: opts.device ?? t.device, requiresGrad: opts.requiresGrad };
}

/** Uniform values in [0, 1) in t's shape, dtype and device (opts override; like torch.rand_like). */
export function randLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  return rand(t.shape, likeOpts('randLike', t, opts));
}
/** Standard normal values in t's shape, dtype and device (opts override; like torch.randn_like). */
export function randnLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  return randn(t.shape, likeOpts('randnLike', t, opts));
}
/**
 * Integers uniform in [low, high) in t's shape, dtype and device (opts override; like
 * torch.randint_like).
 */
export function randintLike(t: Tensor, low: number, high: number, opts: TensorOptions = {}): Tensor {
  return randint(low, high, t.shape, likeOpts('randintLike', t, opts));
}

const dropoutOp = defineOp<[x: Tensor, p: number, training: boolean]>({
  name: 'dropout',
  inputs: [0],
  kernels: ['dropout', 'dropoutBackward'],
  check(x, p) {
    const op = 'dropout';
    x._check(op);
    if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new ValueError(op, `probability has to be between 0 and 1, got ${p}`);
    if (!isFloating(x.dtype)) throw new DTypeError(op, `expects a floating point tensor, got ${x.dtype}`);
  },
  forward(x, p, training) {
    const op = 'dropout';
    if (!training || p === 0) return x;
    if (p === 1) {
      const out = zeros(x.shape, { dtype: x.dtype, device: x.device });
      return recordOp(op, [x], out, [], (g) => [zeros(g.shape, { dtype: g.dtype, device: g.device })]);
    }
    const out = emptyTensor(x.shape, x.dtype, x._dev);
    const mask = emptyTensor(x.shape, 'bool', x._dev);
    fillOutputs([out, mask], () => draw((s, o) => N.dropout(x._h, p, s, o, out._h, mask._h)));
    const scale = 1 / (1 - p);
    recordOp(op, [x], out, [mask], (g, [m]) => {
      const gx = emptyTensor(g.shape, g.dtype, g._dev);
      fillOutputs([gx], () => N.dropoutBackward(g._h, m._h, scale, gx._h));
      return [gx];
    });
    mask.dispose();
    return out;
  },
});

/**
 * Zeroes each element with probability p and scales the rest by 1 / (1 - p) while training; returns
 * x itself when not training or when p is 0. One fused pass draws the mask and scales; the mask is
 * kept (as bool) for the backward pass, which applies the same mask and scale.
 */
export function dropout(x: Tensor, p = 0.5, training = true): Tensor {
  return dropoutOp(x, p, training);
}
