// Typed errors. Native code throws these too: the addon calls the factory installed below, so a
// native failure arrives as an instance of the same class, with a JavaScript stack.

/** Base class of every kiln error. `code` is the class name; `op` is the operation that failed. */
export class KilnError extends Error {
  /** The error's class name ('ShapeError', 'OutOfMemoryError', ...), also its `name`: stable for programs to test. */
  readonly code: string;
  /** The operation that failed ('matmul', 'loadSafetensors', ...); the message starts with it. */
  readonly op: string;
  /** op names the failed operation; the message becomes `${op}: ${message}`. */
  constructor(op: string, message: string, code = 'KilnError') {
    super(op ? `${op}: ${message}` : message);
    this.op = op;
    this.code = code;
    this.name = code;
  }
}

// Typed as a plain KilnError constructor so that the declarations name no Node.js types (the inferred
// class type would carry ErrorConstructor's statics, NodeJS.CallSite among them).
function errorClass(code: string): new (op: string, message: string) => KilnError {
  return class extends KilnError {
    constructor(op: string, message: string) {
      super(op, message, code);
    }
  };
}

/** Shapes that do not fit the operation (broadcasting, matmul inner sizes, reshape sizes). */
export class ShapeError extends errorClass('ShapeError') {}
/** A dtype the operation does not accept, or two that do not match. */
export class DTypeError extends errorClass('DTypeError') {}
/** Tensors on different devices, or a device this build or machine does not have. */
export class DeviceError extends errorClass('DeviceError') {}
/** An index or dimension out of range (checked before any memory is read). */
export class IndexError extends errorClass('IndexError') {}
/** An argument value that is not allowed (a negative probability, a bad option). */
export class ValueError extends errorClass('ValueError') {}
/** A failed CUDA call. */
export class CudaError extends errorClass('CudaError') {}
/** An allocation that failed; the message says how much was asked and how much is held. */
export class OutOfMemoryError extends errorClass('OutOfMemoryError') {}
/** A failed collective operation or process-group setup. */
export class DistError extends errorClass('DistError') {}
/** A malformed file (safetensors, checkpoints, token files). */
export class FormatError extends errorClass('FormatError') {}
/** A tensor used after dispose(). */
export class DisposedError extends errorClass('DisposedError') {}
/** Misuse of autograd: backward on a non-scalar without a gradient, through a freed graph, ... */
export class AutogradError extends errorClass('AutogradError') {}

// Same order as kiln::ErrorCode in native/core/error.h.
const byCode: Array<new (op: string, message: string) => KilnError> = [
  ShapeError, DTypeError, DeviceError, IndexError, ValueError, CudaError, OutOfMemoryError, DistError, FormatError,
  DisposedError,
];

/** Builds the error for a native failure (installed into the addon at load). */
export function nativeError(code: number, op: string, message: string): KilnError {
  const Cls = byCode[code];
  return Cls ? new Cls(op, message) : new KilnError(op, message);
}

/**
 * @internal Throws a ValueError for a synchronous scope (tidy, autocast, withStream, a graph capture,
 * a profile) whose fn returned a Promise or other thenable: what runs after its first await would
 * escape the scope. The thenable's own rejection, expected then, is silenced. hint says what to do.
 */
export function refusePromise(op: string, result: unknown, hint: string): void {
  const then = result !== null && typeof result === 'object' ? (result as { then?: unknown }).then : undefined;
  if (typeof then !== 'function') return;
  (result as PromiseLike<unknown>).then(undefined, () => {});
  throw new ValueError(op, `fn returned a Promise; ${hint}`);
}
