// kiln's public API.
import { nativeError } from './errors';
import { setErrorFactory } from './ops/runtime';

setErrorFactory(nativeError);

// The entry exports an explicit list (test/exports.test.ts keeps a snapshot of it): helpers that
// the op files share with each other (checks, native tables, fill helpers) stay in their modules.
export { Tensor } from './tensor';
export type { TensorOrScalar, NestedArray, BackwardOptions, HookHandle } from './tensor';
export type { DType } from './dtype';
export type { Device } from './device';
export {
  KilnError, ShapeError, DTypeError, DeviceError, IndexError, ValueError, CudaError, OutOfMemoryError, DistError, FormatError,
  DisposedError, AutogradError,
} from './errors';
export { noGrad, enableGrad, isGradEnabled, setGradEnabled } from './autograd/grad_mode';
export { autocast, isAutocastEnabled } from './autocast';
export type { AutocastOptions, AutocastDType } from './autocast';
export { Node as GradNode } from './autograd/engine';
export type { BackwardFn } from './autograd/engine';
export { tidy, keep, dispose, memory, emptyCache, resetPeakMemory } from './memory';
export type { MemoryInfo } from './memory';
export {
  tensor, scalar, empty, full, zeros, ones, emptyLike, zerosLike, onesLike, fullLike, arange, linspace, eye, to, clone, copy_, fill_,
} from './ops/creation';
export type { TensorOptions } from './ops/creation';
export {
  reshape, view, permute, transpose, t, expand, squeeze, unsqueeze, flatten, unflatten, slice, narrow, select, contiguous, split, chunk,
  cat, stack, repeat,
} from './ops/shape';
export {
  resultType, add, sub, mul, div, neg, exp, log, log1p, sqrt, rsqrt, square, reciprocal, abs, sin, cos, tanh, sigmoid, relu, silu, gelu,
  sign, floor, ceil, round, pow, maximum, minimum, clamp, eq, ne, lt, le, gt, ge, logicalNot, logicalAnd, logicalOr, where, maskedFill,
  add_, sub_, mul_, div_, isclose, allclose,
} from './ops/elementwise';
export { sum, mean, max, min, argmax, argmin, variance, std, logsumexp, all, any } from './ops/reduce';
export type { DimArg, VarianceOptions } from './ops/reduce';
export { matmul, linear } from './ops/matmul';
export { softmax, logSoftmax, crossEntropy } from './ops/softmax';
export type { CrossEntropyOptions } from './ops/softmax';
export { flashAttention } from './ops/attention';
export type { FlashAttentionOptions } from './ops/attention';
export { layerNorm } from './ops/norm';
export { embedding, indexSelect, gather, scatterAdd } from './ops/indexing';
export {
  manualSeed, initialSeed, getRngState, setRngState, uniform, normal, rand, randn, randint, randLike, randnLike, randintLike, dropout,
} from './ops/random';
export type { RngState } from './ops/random';
export { buildInfo, setNumThreads } from './ops/runtime';
export type { BuildInfo } from './ops/runtime';
export * as cuda from './cuda';
export * as nn from './nn';
export * as optim from './optim';
export * as data from './data';
export * as train from './train';
export * as io from './io';
export * as dist from './dist';
