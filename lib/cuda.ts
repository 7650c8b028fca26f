// kiln.cuda: whether CUDA is usable, devices, synchronization, allocator statistics and cache
// control, and TF32 for float32 matmul.
import { DeviceError } from './errors';
import { cudaRuntime } from './ops/runtime';

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
}

function need<K extends keyof CudaNative>(name: K): NonNullable<CudaNative[K]> {
  const f = N[name];
  if (!f) throw new DeviceError(String(name), 'kiln was built without CUDA');
  return f.bind(N) as NonNullable<CudaNative[K]>;
}

function index(device?: number | string): number {
  if (device === undefined) return 0;
  if (typeof device === 'number') return device;
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (!m) throw new DeviceError('cuda', `not a CUDA device: '${device}'`);
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
/** Waits until all work enqueued on the device has finished. */
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
