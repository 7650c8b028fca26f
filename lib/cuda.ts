// kiln.cuda: whether CUDA is usable, devices, synchronization, allocator statistics and cache
// control, TF32 for float32 matmul, streams and events (torch.cuda.Stream / Event / stream()), CUDA
// graphs (torch.cuda.CUDAGraph), and GPU time per kernel (profileKernels).
import { DeviceError, ValueError, refusePromise } from './errors';
import { cudaRuntime } from './ops/runtime';
import { deviceName, type Device } from './device';
import { withKernelMarks } from './ops/dispatch';
import type { Tensor } from './tensor';

/** A native stream (an N-API external; see native/binding/cuda.cc). */
type StreamHandle = { readonly __kilnStream: unique symbol };
/** A native event (an N-API external). */
type EventHandle = { readonly __kilnEvent: unique symbol };
/** A native CUDA graph (an N-API external). */
type GraphHandle = { readonly __kilnGraph: unique symbol };

interface CudaNative {
  cudaDeviceCount(): number;
  cudaDeviceName?(d: number): string;
  cudaSynchronize?(d: number): void;
  cudaMemoryStats?(d: number): CudaMemoryStats;
  cudaResetPeakMemoryStats?(d: number): void;
  cudaEmptyCache?(): void;
  cudaSyncCount?(): number;
  cudaSetAllowTF32?(on: boolean): void;
  cudaAllowTF32?(): boolean;
  cudaStreamCreate?(d: number, priority: number): StreamHandle;
  cudaDefaultStream?(d: number): StreamHandle;
  cudaSetCurrentStream?(s: StreamHandle): void;
  cudaStreamQuery?(s: StreamHandle): boolean;
  cudaStreamSynchronize?(s: StreamHandle): void;
  cudaStreamWaitEvent?(s: StreamHandle, e: EventHandle): void;
  cudaStreamWaitStream?(s: StreamHandle, other: StreamHandle): void;
  cudaEventCreate?(enableTiming: boolean): EventHandle;
  cudaEventRecord?(e: EventHandle, s: StreamHandle): void;
  cudaEventQuery?(e: EventHandle): boolean;
  cudaEventSynchronize?(e: EventHandle): void;
  cudaEventElapsedTime?(start: EventHandle, end: EventHandle): number;
  cudaRecordStream?(t: Tensor['_h'], s: StreamHandle): void;
  cudaGraphCaptureBegin?(s: StreamHandle): GraphHandle;
  cudaGraphCaptureEnd?(g: GraphHandle): void;
  cudaGraphCaptureAbort?(g: GraphHandle): void;
  cudaGraphReplay?(g: GraphHandle): void;
  cudaGraphDispose?(g: GraphHandle): void;
  cudaIsCapturing?(): boolean;
  cudaProfileMark?(d: number, tag: number): void;
  cudaProfileCollect?(d: number): Float64Array;
}
const N: CudaNative = cudaRuntime;

/**
 * One GPU's caching-allocator statistics (like torch.cuda.memory_stats), from kiln.cuda.memoryStats().
 */
export interface CudaMemoryStats {
  /** Bytes in blocks held by tensors. */
  allocated: number;
  /** Bytes obtained from the driver (held by tensors plus cached for reuse). */
  reserved: number;
  /** Most bytes held by tensors at once since start or since resetPeakMemoryStats(). */
  peakAllocated: number;
  /** cudaMalloc calls so far (flat during steady training: the cache serves the hot path). */
  mallocs: number;
  /** cudaFree calls so far (emptyCache(), and the retry after an allocation failed). */
  frees: number;
  /** Allocations that failed even after the cache was freed. */
  ooms: number;
  /**
   * Freed blocks not yet reusable: they wait for work on other streams (recordStream) to finish, and
   * join the cache once it has.
   */
  pending: number;
}

function need<K extends keyof CudaNative>(name: K, op: string = name): NonNullable<CudaNative[K]> {
  const f = N[name];
  if (!f) throw new DeviceError(op, 'kiln was built without CUDA');
  return f.bind(N) as NonNullable<CudaNative[K]>;
}

function index(device?: number | string, op = 'cuda'): number {
  if (device === undefined) return 0;
  if (typeof device === 'number') return device;
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (!m) throw new DeviceError(op, `not a CUDA device: '${device}'`);
  return Number(m[1] ?? 0);
}

/** True when this build has the CUDA backend and at least one GPU is visible. */
export function isAvailable(): boolean {
  return N.cudaDeviceCount() > 0;
}
/** Number of visible GPUs (0 without a CUDA build). */
export function deviceCount(): number {
  return N.cudaDeviceCount();
}
/**
 * The GPU's name as the driver reports it (like torch.cuda.get_device_name); device is a number or
 * 'cuda:N' (default 0). A DeviceError without CUDA.
 */
export function getDeviceName(device?: number | string): string {
  return need('cudaDeviceName')(index(device));
}
/** Waits until all work enqueued on the device has finished, on every stream (like torch.cuda.synchronize). */
export function synchronize(device?: number | string): void {
  need('cudaSynchronize')(index(device));
}
/**
 * The caching allocator's statistics for device (a number or 'cuda:N', default 0). A DeviceError
 * without CUDA.
 */
export function memoryStats(device?: number | string): CudaMemoryStats {
  return need('cudaMemoryStats')(index(device));
}
/**
 * Starts peakAllocated afresh from what is allocated now on device (default 0), to measure one phase's
 * peak.
 */
export function resetPeakMemoryStats(device?: number | string): void {
  need('cudaResetPeakMemoryStats')(index(device));
}
/** Returns cached, unused GPU memory to the driver. */
export function emptyCache(): void {
  need('cudaEmptyCache')();
}
/** Host synchronizations with a GPU so far (reads back, synchronize()); for tests and profiling. */
export function syncCount(): number {
  return need('cudaSyncCount')();
}
/** Lets float32 matmuls use TF32 tensor cores (off by default, like PyTorch). */
export function setAllowTF32(on: boolean): void {
  need('cudaSetAllowTF32')(on);
}
/** Whether float32 matmuls may use TF32 tensor cores (setAllowTF32; false without CUDA). */
export function allowTF32(): boolean {
  return N.cudaAllowTF32 ? N.cudaAllowTF32() : false;
}

let flashAttentionOn = true;
/**
 * Lets nn's attention (scaledDotProductAttention, MultiheadAttention, GPT) take the fused flash
 * kernels on CUDA whenever they apply (on by default; like torch.backends.cuda.enable_flash_sdp).
 * Off, CUDA attention materializes the scores, as on a PyTorch without SDPA. kiln.flashAttention
 * called directly is not affected.
 */
export function setFlashAttention(on: boolean): void {
  if (typeof on !== 'boolean') throw new ValueError('setFlashAttention', `on must be a boolean, got ${describe(on)}`);
  flashAttentionOn = on;
}
/** Whether nn's attention takes the fused flash kernels on CUDA (setFlashAttention). */
export function flashAttentionEnabled(): boolean {
  return flashAttentionOn;
}

/** Options for `new kiln.cuda.Stream()`. */
export interface StreamOptions {
  /** The GPU: a number or 'cuda:N' (default 0). */
  device?: number | string;
  /**
   * An integer; lower runs first when streams compete (default 0, the lowest priority; recent GPUs
   * accept down to -5). Outside the device's range it is a ValueError.
   */
  priority?: number;
}

/** Options for `new kiln.cuda.Event()`. */
export interface EventOptions {
  /** Record timestamps, for elapsedTime() (default false: cheaper to record and wait on). */
  enableTiming?: boolean;
}

function checkOptions(op: string, opts: unknown, keys: string[]): void {
  if (opts === null || typeof opts !== 'object') throw new ValueError(op, `options must be an object, got ${String(opts)}`);
  for (const k of Object.keys(opts)) {
    if (!keys.includes(k)) throw new ValueError(op, `unknown option '${k}' (expected ${keys.join(', ')})`);
  }
}

function deviceIndex(op: string, device: number | string | undefined): number {
  if (device !== undefined && typeof device !== 'number' && typeof device !== 'string') {
    throw new DeviceError(op, `device must be a number or 'cuda:N', got ${describe(device)}`);
  }
  const d = index(device, op);
  if (!Number.isInteger(d) || d < 0) throw new DeviceError(op, `not a CUDA device: ${String(device)}`);
  return d;
}

function expectStream(op: string, s: unknown, what = 'stream'): Stream {
  if (!(s instanceof Stream)) throw new ValueError(op, `${what} must be a kiln.cuda.Stream, got ${describe(s)}`);
  return s;
}

function expectEvent(op: string, e: unknown, what = 'event'): Event {
  if (!(e instanceof Event)) throw new ValueError(op, `${what} must be a kiln.cuda.Event, got ${describe(e)}`);
  return e;
}

function describe(v: unknown): string {
  return v === null ? 'null' : typeof v === 'object' ? (v.constructor?.name ?? 'an object') : typeof v;
}

/**
 * A queue of GPU work (like torch.cuda.Stream). Work on one stream runs in order; work on different
 * streams may overlap (communication beside computation, say), ordered only where events say so.
 * Ops enqueue on the current stream of their device: the default stream, or the one `withStream`
 * makes current. The CUDA stream is destroyed once this object has been garbage collected and
 * the memory allocated on it freed (CUDA finishes the work queued on it first).
 */
export class Stream {
  /** The GPU this stream belongs to. */
  readonly device: Device;
  /** Its priority (lower runs first). */
  readonly priority: number;
  /** @internal */
  readonly _h: StreamHandle;
  /** @internal native device index */
  readonly _dev: number;

  /** A new stream on `device` (default 0); a DeviceError without CUDA. */
  constructor(opts: StreamOptions = {}) {
    checkOptions('Stream', opts, ['device', 'priority']);
    const d = deviceIndex('Stream', opts.device);
    const priority = opts.priority ?? 0;
    if (!Number.isInteger(priority)) throw new ValueError('Stream', `priority must be an integer, got ${String(priority)}`);
    this._h = need('cudaStreamCreate', 'Stream')(d, priority);
    this._dev = d;
    this.device = deviceName(d);
    this.priority = priority;
  }

  /** Waits on the host until all work enqueued on this stream has finished. */
  synchronize(): void {
    need('cudaStreamSynchronize', 'Stream.synchronize')(this._h);
  }
  /** True when all work enqueued on this stream has finished (does not wait). */
  query(): boolean {
    return need('cudaStreamQuery', 'Stream.query')(this._h);
  }
  /** Makes work enqueued on this stream from now on wait until `event` (its last record) completes. */
  waitEvent(event: Event): void {
    need('cudaStreamWaitEvent', 'Stream.waitEvent')(this._h, expectEvent('Stream.waitEvent', event)._h);
  }
  /** Makes work enqueued on this stream from now on wait for the work enqueued on `stream` so far. */
  waitStream(stream: Stream): void {
    need('cudaStreamWaitStream', 'Stream.waitStream')(this._h, expectStream('Stream.waitStream', stream)._h);
  }
  /** Records `event` (a new one when omitted) on this stream and returns it. */
  recordEvent(event?: Event): Event {
    const e = event === undefined ? new Event() : expectEvent('Stream.recordEvent', event);
    e.record(this);
    return e;
  }
}

/**
 * A marker in a stream's work (like torch.cuda.Event): record() it on one stream, then wait() on
 * another to order them, synchronize() the host with it, or time the work between two events.
 * The CUDA event is made on the first record, on that stream's device; it is destroyed once this
 * object is garbage collected.
 */
export class Event {
  /** Whether it records timestamps (elapsedTime needs them). */
  readonly enableTiming: boolean;
  /** @internal */
  readonly _h: EventHandle;
  /** @internal device of its first record */
  _dev: number | undefined;

  /** A new event; a DeviceError without CUDA. */
  constructor(opts: EventOptions = {}) {
    checkOptions('Event', opts, ['enableTiming']);
    const timing = opts.enableTiming ?? false;
    if (typeof timing !== 'boolean') throw new ValueError('Event', `enableTiming must be a boolean, got ${describe(timing)}`);
    this._h = need('cudaEventCreate', 'Event')(timing);
    this.enableTiming = timing;
  }

  /**
   * Records this event on `stream` (default: the current stream of the device it was recorded on
   * before, else of cuda:0): it completes when the work enqueued there so far is done.
   */
  record(stream?: Stream): void {
    const s = stream === undefined ? currentStream(this._dev) : expectStream('Event.record', stream);
    need('cudaEventRecord', 'Event.record')(this._h, s._h);
    this._dev = s._dev;
  }
  /**
   * Makes work enqueued on `stream` (default: the current stream of this event's device) from now on
   * wait until this event completes; nothing to wait for when it was never recorded.
   */
  wait(stream?: Stream): void {
    const s = stream === undefined ? currentStream(this._dev) : expectStream('Event.wait', stream);
    need('cudaStreamWaitEvent', 'Event.wait')(s._h, this._h);
  }
  /** Waits on the host until this event completes (at once when it was never recorded). */
  synchronize(): void {
    need('cudaEventSynchronize', 'Event.synchronize')(this._h);
  }
  /** True when this event has completed or was never recorded (does not wait). */
  query(): boolean {
    return need('cudaEventQuery', 'Event.query')(this._h);
  }
  /**
   * Milliseconds of GPU time from this event's record to `end`'s. Both need `enableTiming: true` and
   * a record; the host waits for both to complete.
   */
  elapsedTime(end: Event): number {
    return need('cudaEventElapsedTime', 'Event.elapsedTime')(this._h, expectEvent('Event.elapsedTime', end, 'end')._h);
  }
}

// A device's default stream as a Stream, without the constructor (which makes a new one).
function adoptStream(h: StreamHandle, d: number): Stream {
  const s: Stream = Object.create(Stream.prototype);
  return Object.assign(s, { _h: h, _dev: d, device: deviceName(d), priority: 0 });
}

const defaults = new Map<number, Stream>();
// The stream withStream made current per device; native code keeps the same per host thread
// (JavaScript runs on one), and only withStream changes it.
const current = new Map<number, Stream>();

function defaultFor(op: string, d: number): Stream {
  let s = defaults.get(d);
  if (!s) {
    s = adoptStream(need('cudaDefaultStream', op)(d), d);
    defaults.set(d, s);
  }
  return s;
}

/** The default stream of device (a number or 'cuda:N', default 0): where ops go outside withStream. */
export function defaultStream(device?: number | string): Stream {
  return defaultFor('defaultStream', deviceIndex('defaultStream', device));
}

/** The stream ops on device (default 0) are enqueued on now: withStream's, else the default stream. */
export function currentStream(device?: number | string): Stream {
  const d = deviceIndex('currentStream', device);
  return current.get(d) ?? defaultFor('currentStream', d);
}

/**
 * Runs fn with `stream` as the current stream of its device (like `with torch.cuda.stream(s)`): ops
 * on that device inside fn enqueue on it. The previous stream comes back when fn returns or throws.
 * fn is synchronous, as in tidy: a returned Promise is a ValueError, since what runs after an await
 * would escape the scope.
 */
export function withStream<T>(stream: Stream, fn: () => T): T {
  expectStream('withStream', stream);
  if (typeof fn !== 'function') throw new ValueError('withStream', `fn must be a function, got ${describe(fn)}`);
  const d = stream._dev;
  const prev = currentStream(d);
  const set = need('cudaSetCurrentStream', 'withStream');
  set(stream._h);
  current.set(d, stream);
  let result: T;
  try {
    result = fn();
  } finally {
    set(prev._h);
    current.set(d, prev);
  }
  refusePromise('withStream', result, 'stream scopes are synchronous (await outside withStream)');
  return result;
}

/**
 * Tells the allocator that `tensor`'s memory is used by work on `stream` as well as on the stream it
 * was allocated on (like torch's Tensor.record_stream): once the tensor is freed, its memory is
 * handed out again only after the work enqueued on `stream` by then has finished. Needed when a
 * tensor made on one stream is read or written on another (a side stream's all-reduce, say) and
 * may be freed before that stream's work is done.
 */
export function recordStream(tensor: Tensor, stream: Stream): void {
  expectStream('recordStream', stream);
  if (tensor === null || typeof tensor !== 'object' || !('_h' in tensor)) {
    throw new ValueError('recordStream', `tensor must be a kiln Tensor, got ${describe(tensor)}`);
  }
  if (tensor.device !== stream.device) {
    throw new DeviceError('recordStream', `the tensor is on ${tensor.device} and the stream on ${stream.device}`);
  }
  need('cudaRecordStream', 'recordStream')(tensor._h, stream._h);
}

/**
 * True while a CUDAGraph is capturing on this thread (like torch.cuda.is_current_stream_capturing):
 * ops then enqueue into the graph instead of running, and reads of tensors are refused.
 */
export function isCapturing(): boolean {
  return N.cudaIsCapturing ? N.cudaIsCapturing() : false;
}

/**
 * The GPU work of a function, captured once and replayed as a single launch (like
 * torch.cuda.CUDAGraph): `replay()` reruns every captured kernel on the same memory, with no
 * JavaScript and no per-op launch cost. Use it for work whose shapes and control flow do not change
 * between calls, a training step say:
 *
 *     step();                                   // warm up eagerly first (optimizer state, workspaces)
 *     const g = new kiln.cuda.CUDAGraph();
 *     const loss = g.capture(() => step());     // enqueues nothing: records the step
 *     for (...) { x.copy_(next()); g.replay(); } // loss holds each replay's value
 *
 * What the captured function reads must be tensors that exist before the capture and stay alive and
 * in place (copy new inputs into them with copy_ before each replay); what it returns, and any
 * tensor it made and kept, is rewritten by every replay. Host numbers are baked in at capture: an
 * optimizer's learning rate must come from a tensor (the optimizers' `capturable` option). While
 * capturing, reading a tensor (item, toArray), synchronizing, making a tensor from host data and
 * drawing random numbers throw a ValueError. The memory the graph uses stays reserved for it until
 * dispose() (or garbage collection).
 */
export class CUDAGraph {
  /** The GPU whose work the graph holds. */
  readonly device: Device;
  /** @internal */
  private readonly _dev: number;
  /** @internal the graph's private stream: captures and replays run on it */
  private _stream: Stream | null = null;
  /** @internal */
  private _h: GraphHandle | null = null;
  /** @internal */
  private _state: 'new' | 'capturing' | 'ready' | 'disposed' = 'new';

  /** A graph for device (a number or 'cuda:N', default 0); a DeviceError without CUDA. */
  constructor(device?: number | string) {
    this._dev = deviceIndex('CUDAGraph', device);
    need('cudaGraphCaptureBegin', 'CUDAGraph');
    if (this._dev >= deviceCount()) throw new DeviceError('CUDAGraph', `cuda:${this._dev} does not exist (${deviceCount()} visible)`);
    this.device = deviceName(this._dev);
  }

  /**
   * Runs fn once with its GPU work captured into this graph instead of executed, and returns fn's
   * result (the tensors it returns are the graph's outputs: every replay rewrites them). fn must be
   * synchronous and must have run eagerly at least once before (lazily made state, such as optimizer
   * moments and library workspaces, must exist first). A graph captures once; if fn throws, the
   * capture is discarded and the error rethrown.
   */
  capture<T>(fn: () => T): T {
    const op = 'CUDAGraph.capture';
    if (typeof fn !== 'function') throw new ValueError(op, `fn must be a function, got ${describe(fn)}`);
    if (this._state !== 'new') throw new ValueError(op, `this graph is ${this._state === 'disposed' ? 'disposed' : 'already captured'}; make a new CUDAGraph`);
    if (isCapturing()) throw new ValueError(op, 'not allowed while a CUDA graph is being captured: graphs do not nest');
    const d = this._dev;
    const prev = currentStream(d);
    this._stream = new Stream({ device: d });
    this._h = need('cudaGraphCaptureBegin', op)(this._stream._h);
    this._state = 'capturing';
    current.set(d, this._stream);
    let result: T;
    try {
      result = fn();
      refusePromise(op, result, 'a capture is synchronous');
    } catch (e) {
      need('cudaGraphCaptureAbort', op)(this._h);
      current.set(d, prev);
      this.dispose();
      throw e;
    }
    current.set(d, prev);
    try {
      need('cudaGraphCaptureEnd', op)(this._h);
    } catch (e) {
      this.dispose();
      throw e;
    }
    this._state = 'ready';
    return result;
  }

  /**
   * Enqueues every captured kernel again, after the work enqueued on the device's current stream so
   * far and before what is enqueued there next; returns at once.
   */
  replay(): void {
    const op = 'CUDAGraph.replay';
    if (this._state !== 'ready') throw new ValueError(op, this._state === 'new' ? 'nothing captured yet (call capture first)' : `the graph is ${this._state}`);
    need('cudaGraphReplay', op)(this._h!);
  }

  /** Frees the graph; its memory is reused once the replays enqueued so far are done. Idempotent. */
  dispose(): void {
    if (this._h) need('cudaGraphDispose', 'CUDAGraph.dispose')(this._h);
    this._h = null;
    this._stream = null;
    this._state = 'disposed';
  }
}

/** One kernel's share of a profileKernels run. */
export interface KernelTime {
  /** The native kernel ('bmm', 'layerNormForward', ...; elementwise and reduce add the op: 'unary:exp'). */
  name: string;
  /** Its op family: matmul, attention, norm, softmax, elementwise, reduce, index, optim, random, rnn, copy. */
  family: string;
  /** GPU milliseconds from its calls' starts to the next kernel call's start, summed. */
  ms: number;
  /** Calls made. */
  calls: number;
}

/** What profileKernels measured, with fn's result. */
export interface KernelProfile<T> {
  /** What fn returned. */
  result: T;
  /** GPU milliseconds from the first kernel call to the end of fn's work. */
  gpuMs: number;
  /** Host milliseconds fn took to run (to enqueue its work; the GPU catches up after). */
  hostMs: number;
  /** Per kernel, most time first. */
  kernels: KernelTime[];
  /** Milliseconds per family, most time first. */
  families: Record<string, number>;
}

/**
 * GPU time per native kernel while fn runs on device (default 0): a timing event is recorded on the
 * current stream before every kernel call, and each call is charged the time from its event to the
 * next, which is its kernels' time when the GPU has work queued. When the GPU waits for the host
 * (gpuMs close to hostMs), the wait is charged to the call before it. Marks cost a few microseconds
 * of host time per call; the profile waits for the device once at the end. Not during graph capture.
 */
export function profileKernels<T>(fn: () => T, device?: number | string): KernelProfile<T> {
  const op = 'profileKernels';
  if (typeof fn !== 'function') throw new ValueError(op, `fn must be a function, got ${describe(fn)}`);
  const d = deviceIndex(op, device);
  const mark = need('cudaProfileMark', op);
  const labels: string[] = [], families: string[] = [];
  const tags = new Map<string, number>();
  const collect = need('cudaProfileCollect', op);
  const t0 = performance.now();
  let result: T;
  try {
    result = withKernelMarks((family, kernel) => {
      let tag = tags.get(kernel);
      if (tag === undefined) {
        tag = labels.length;
        tags.set(kernel, tag);
        labels.push(kernel);
        families.push(family);
      }
      mark(d, tag);
    }, fn);
  } catch (e) {
    if (!isCapturing()) collect(d); // drops this run's marks
    throw e;
  }
  const hostMs = performance.now() - t0;
  const marks = collect(d);
  refusePromise(op, result, 'profiles are synchronous (await outside profileKernels)');
  const byKernel = labels.map((name, i) => ({ name, family: families[i], ms: 0, calls: 0 }));
  let gpuMs = 0;
  for (let i = 0; i < marks.length; i += 2) {
    const k = byKernel[marks[i]];
    k.ms += marks[i + 1];
    k.calls++;
    gpuMs += marks[i + 1];
  }
  const kernels = byKernel.sort((a, b) => b.ms - a.ms);
  const perFamily = new Map<string, number>();
  for (const k of kernels) perFamily.set(k.family, (perFamily.get(k.family) ?? 0) + k.ms);
  return { result, gpuMs, hostMs, kernels, families: Object.fromEntries([...perFamily].sort((a, b) => b[1] - a[1])) };
}
