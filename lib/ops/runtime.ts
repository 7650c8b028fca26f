// The addon's functions that are not op kernels: build facts, CPU threads, the error factory, native
// memory statistics and the CPU cache, and the CUDA runtime's device functions. They live in lib/ops
// because only lib/ops and lib/tensor.ts reach the addon (lib/native.ts); lib/index.ts, lib/memory.ts
// and lib/cuda.ts call them from here.
import { native, nativeExports } from '../native';

/** What the native build enabled (kiln.buildInfo()). */
export interface BuildInfo {
  /** Whether the CPU kernels run on OpenMP threads. */
  openmp: boolean;
  /** The GEMM library float32 matmul calls: 'openblas' when the build found it, else 'builtin' (kiln's blocked kernels). */
  blas: string;
  /** Whether the CUDA backend was compiled in (kiln.cuda.isAvailable() also needs a visible GPU). */
  cuda: boolean;
  /** Threads the CPU kernels use (setNumThreads changes it). */
  threads: number;
  /**
   * The instruction set the vectorized CPU kernels (elementwise, softmax, cross-entropy) run: their
   * AVX2+FMA clones when the CPU has them, unless KILN_SIMD=baseline.
   */
  simd: 'avx2' | 'baseline';
}

/** What the native build enabled: OpenMP, the GEMM library, CUDA, the thread count and the SIMD level. */
export function buildInfo(): BuildInfo {
  return native.buildInfo();
}

/** Sets the number of CPU threads kernels use (like torch.set_num_threads). */
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}

/** @internal Makes native errors instances of kiln's error classes (lib/index.ts installs errors.ts's). */
export function setErrorFactory(f: (code: number, op: string, message: string) => Error): void {
  native.setErrorFactory(f);
}

/** @internal The addon's count of tensors, storages and CPU bytes (lib/memory.ts's memory()). */
export function memoryStats(): ReturnType<typeof native.memoryStats> {
  return native.memoryStats();
}

/** @internal Starts the CPU peak-bytes count afresh. */
export function resetPeakMemory(): void {
  native.resetPeakMemory();
}

/** @internal Returns the cached CPU blocks to the system. */
export function emptyCache(): void {
  native.emptyCache();
}

/**
 * @internal The addon's CUDA runtime functions by name (native/binding/cuda.cc). lib/cuda.ts types
 * them, the way lib/native.ts types the core: a build without CUDA exports only cudaDeviceCount.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const cudaRuntime: any = nativeExports;
