// Deterministic freeing of native memory: tidy() scopes dispose the tensors created inside them
// except what they return; keep() takes a tensor out of every open scope; memory() reports.
import type { Tensor } from './tensor';
import { OutOfMemoryError, refusePromise } from './errors';
import * as runtime from './ops/runtime';

const scopes: Set<Tensor>[] = [];

/**
 * @internal Records a new tensor in the innermost open tidy scope; outside every scope, the garbage
 * collector's safety net frees it if it is never disposed.
 */
export function track(t: Tensor): void {
  if (scopes.length) scopes[scopes.length - 1].add(t);
  else t._makeCollectable();
}

/** Takes t out of every open tidy scope, so no scope disposes it (dispose it yourself). Returns t. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  t._makeCollectable();
  return t;
}

function collect(value: unknown, out: Set<Tensor>, seen: Set<unknown>, TensorClass: Function): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (value instanceof TensorClass) {
    out.add(value as Tensor);
  } else if (Array.isArray(value)) {
    for (const v of value) collect(v, out, seen, TensorClass);
  } else if (value instanceof Map) {
    for (const v of value.values()) collect(v, out, seen, TensorClass);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value as object)) collect(v, out, seen, TensorClass);
  }
}

/**
 * Runs fn and disposes every tensor created during it, except the tensors in its result (a tensor,
 * or arrays, Maps and plain objects holding tensors), which pass to the enclosing scope.
 * fn must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  // What ran before the first await is freed; what runs after it would escape every scope. The rest
  // of fn then fails on a disposed tensor: that rejection is expected, not unhandled.
  if (result instanceof Promise) for (const t of scope) t.dispose();
  refusePromise('tidy', result, 'tidy scopes are synchronous (await outside tidy, and tidy each synchronous part)');
  // Loaded lazily: tensor.ts imports this module.
  const { Tensor } = require('./tensor') as typeof import('./tensor');
  const kept = new Set<Tensor>();
  collect(result, kept, new Set(), Tensor);
  for (const t of scope) if (!kept.has(t)) t.dispose();
  const parent = scopes[scopes.length - 1];
  for (const t of kept) {
    if (!scope.has(t)) continue;
    if (parent) parent.add(t);
    else t._makeCollectable();
  }
  return result;
}

/** @internal What one JavaScript TypedArray or Array holds at most (V8's limit in Node 20 to 24). */
export const MAX_HOST_ARRAY_LENGTH = 2 ** 32 - 1;

/**
 * @internal Runs make, which allocates JavaScript memory for op; V8's RangeError (too long, or no
 * memory) becomes an OutOfMemoryError saying failure(). Buffers the addon fills are allocated this
 * way too: V8 aborts the process when a native ArrayBuffer allocation fails.
 */
export function hostAlloc<T>(op: string, failure: () => string, make: () => T): T {
  try {
    return make();
  } catch (e) {
    if (e instanceof RangeError) throw new OutOfMemoryError(op, failure());
    throw e;
  }
}

/** Disposes every tensor in the argument (a tensor, or arrays/objects holding tensors). */
export function dispose(value: unknown): void {
  const { Tensor } = require('./tensor') as typeof import('./tensor');
  const found = new Set<Tensor>();
  collect(value, found, new Set(), Tensor);
  for (const t of found) t.dispose();
}

/**
 * Native memory kiln holds in this process (all threads together; GPU memory is in
 * kiln.cuda.memoryStats()).
 */
export interface MemoryInfo {
  /**
   * Tensor handles not yet disposed: live tensors, what autograd saved for backward, and tensors the
   * garbage collector has collected but whose handles wait for the event loop to release them (a
   * count that keeps growing in a synchronous loop is a tensor that is never disposed: use tidy).
   */
  tensors: number;
  /** Native CPU allocations those handles keep alive (views share one). */
  storages: number;
  /** Bytes of those allocations. */
  bytes: number;
  /** Most bytes held at once since the process started or since resetPeakMemory(), by all threads. */
  peakBytes: number;
  /**
   * Freed CPU blocks (1 MiB and up) kept for reuse by later tensors of the same size class. The
   * cache never makes kiln hold more than the larger of 1 GiB and the most its live tensors have
   * needed at once (it frees cached blocks first); emptyCache() releases it.
   */
  cachedBytes: number;
}

/** What native memory kiln holds now. */
export function memory(): MemoryInfo {
  return runtime.memoryStats();
}

/** Starts memory().peakBytes afresh from what is held now (to measure the peak of one phase). */
export function resetPeakMemory(): void {
  runtime.resetPeakMemory();
}

/** Returns the cached CPU blocks (memory().cachedBytes) to the system (kiln.cuda.emptyCache for GPUs). */
export function emptyCache(): void {
  runtime.emptyCache();
}
