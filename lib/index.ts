// kiln's public API.
import { native } from './native';
import { nativeError } from './errors';

native.setErrorFactory(nativeError);

export { Tensor } from './tensor';
export type { TensorOrScalar, NestedArray, BackwardOptions } from './tensor';
export type { DType } from './dtype';
export type { Device } from './device';
export * from './errors';
export { noGrad, enableGrad, isGradEnabled, setGradEnabled } from './autograd/grad_mode';
export { Node as GradNode } from './autograd/engine';
export type { BackwardFn } from './autograd/engine';
export { tidy, keep, dispose, memory, emptyCache, resetPeakMemory } from './memory';
export type { MemoryInfo } from './memory';
export * from './ops/creation';
export * from './ops/shape';
export * from './ops/elementwise';
export * from './ops/reduce';
export * from './ops/matmul';
export * from './ops/softmax';
export * from './ops/norm';
export * from './ops/index';
export * from './ops/random';
export * as cuda from './cuda';
export * as nn from './nn';
export * as optim from './optim';
export * as data from './data';
export * as train from './train';
export * as io from './io';

/** What the native build enabled: OpenMP, the GEMM library, CUDA, the thread count, and the instruction set the vectorized CPU kernels (elementwise, softmax, cross-entropy) run: their AVX2+FMA clones when the CPU has them, unless KILN_SIMD=baseline. */
export function buildInfo(): { openmp: boolean; blas: string; cuda: boolean; threads: number; simd: 'avx2' | 'baseline' } {
  return native.buildInfo();
}

/** Sets the number of CPU threads kernels use (like torch.set_num_threads). */
export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}
