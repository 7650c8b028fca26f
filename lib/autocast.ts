// Autocast state (torch.autocast): which low-precision dtype matmul-like ops compute in, per device
// type. lib/ops/dispatch.ts reads it when an op runs; backward runs with it off, so gradients keep
// the dtypes the forward chose.
import { ValueError, refusePromise } from './errors';

/** The dtypes autocast can compute matmul-like ops in. */
export type AutocastDType = 'bfloat16' | 'float16';

/** Options of {@link autocast}. */
export interface AutocastOptions {
  /** The dtype of matmul, linear and attention's products (default 'bfloat16'). */
  dtype?: AutocastDType;
  /** Which devices' ops it applies to: 'cpu', 'cuda' or both (default both). */
  deviceType?: 'cpu' | 'cuda' | 'all';
  /** false runs fn with autocast off (default true). */
  enabled?: boolean;
}

/** @internal The active autocast setting, or null when off. */
export interface AutocastState {
  dtype: AutocastDType;
  deviceType: 'cpu' | 'cuda' | 'all';
}

let state: AutocastState | null = null;

/** @internal The active autocast setting for a device code (-1 is the CPU), or null. */
export function autocastFor(dev: number): AutocastState | null {
  if (!state) return null;
  if (state.deviceType === 'all' || (state.deviceType === 'cpu') === (dev === -1)) return state;
  return null;
}

/** @internal Sets the autocast state; returns the previous one (the engine turns it off for backward). */
export function setAutocastState(s: AutocastState | null): AutocastState | null {
  const prev = state;
  state = s;
  return prev;
}

/**
 * Runs fn with mixed precision, like torch.autocast: matmul, linear and attention's products compute
 * in `dtype` (bfloat16 by default) from float32 inputs; softmax, norms, losses and reductions compute
 * in float32; other ops follow their inputs. Parameters stay float32 (the casts are recorded, so their
 * gradients arrive in float32). fn must be synchronous; scopes nest.
 */
export function autocast<T>(opts: AutocastOptions, fn: () => T): T {
  const dtype = opts.dtype ?? 'bfloat16';
  if (dtype !== 'bfloat16' && dtype !== 'float16') {
    throw new ValueError('autocast', `dtype must be 'bfloat16' or 'float16', got ${String(dtype)}`);
  }
  const deviceType = opts.deviceType ?? 'all';
  if (deviceType !== 'cpu' && deviceType !== 'cuda' && deviceType !== 'all') {
    throw new ValueError('autocast', `deviceType must be 'cpu', 'cuda' or 'all', got ${String(deviceType)}`);
  }
  const prev = setAutocastState(opts.enabled === false ? null : { dtype, deviceType });
  try {
    const out = fn();
    refusePromise('autocast', out, 'autocast scopes are synchronous (await outside, autocast each synchronous part)');
    return out;
  } finally {
    state = prev;
  }
}

/** Whether an autocast scope is active (for any device). */
export function isAutocastEnabled(): boolean {
  return state !== null;
}
