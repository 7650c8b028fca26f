// The optim family's native kernels (native/ops/optim.h) for lib/optim: the fused SGD and Adam/AdamW
// updates (one parameter per call, or a list: the multi-tensor "foreach" path, optionally reading lr
// and step counts on the device for CUDA-graph capture), and the three passes gradient clipping is built from (a reducible norm partial, the clip
// coefficient, an in-place scale of gradients). Named options here, positional arguments below; the
// kernels check every operand. Not recorded by autograd: optimizers run them under noGrad.
import type { DType } from '../dtype';
import { Tensor, emptyTensor } from '../tensor';
import { bindKernels, fillOutputs } from './dispatch';

const N = bindKernels('optim', {
  sgdStep:
    '(param:T, grad:T, momentumBuffer:T?, lr:f, momentum:f, dampening:f, weightDecay:f, nesterov:b, maximize:b, firstStep:b) -> void',
  // One literal: the signature's type is parsed from it.
  adamStep: '(param:T, grad:T, expAvg:T, expAvgSq:T, maxExpAvgSq:T?, lr:f, beta1:f, beta2:f, eps:f, weightDecay:f, biasCorrection1:f, biasCorrection2Sqrt:f, decoupled:b, maximize:b) -> void',
  sgdStepMulti:
    '(params:T[], grads:T[], momentumBuffers:T[], lrTensor:T?, lr:f, momentum:f, dampening:f, weightDecay:f, nesterov:b, maximize:b, firstStep:b) -> void',
  adamStepMulti: '(params:T[], grads:T[], expAvgs:T[], expAvgSqs:T[], maxExpAvgSqs:T[], steps:T[], lrTensor:T?, lr:f, beta1:f, beta2:f, eps:f, weightDecay:f, biasCorrection1:f, biasCorrection2Sqrt:f, decoupled:b, maximize:b) -> void',
  gradNormPartial: '(grads:T[], normType:f, out:T) -> void',
  clipCoefficient: '(partial:T, normType:f, maxNorm:f, norm:T, coef:T) -> void',
  scaleGrads: '(grads:T[], scale:T) -> void',
});

/**
 * @internal The dtype of a parameter's optimizer state (native/ops/optim.h's state_dtype): float32 for
 * bfloat16 and float16 parameters, whose update computes in float32; the parameter's dtype otherwise.
 */
export function stateDType(param: DType): DType {
  return param === 'bfloat16' || param === 'float16' ? 'float32' : param;
}

/** @internal The coefficients of one SGD step (torch.optim.SGD's, plus whether the buffer is new). */
export interface SgdStepOptions {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  maximize: boolean;
  /** The momentum buffer takes the gradient itself (PyTorch's first step). */
  firstStep: boolean;
}

/** @internal In place: param (and momentumBuffer, with momentum) take one SGD step from grad. */
export function sgdStep(param: Tensor, grad: Tensor, momentumBuffer: Tensor | null, o: SgdStepOptions): void {
  N.sgdStep(param._h, grad._h, momentumBuffer?._h ?? null, o.lr, o.momentum, o.dampening, o.weightDecay, o.nesterov, o.maximize, o.firstStep);
}

/** @internal The coefficients of one Adam/AdamW step; the bias corrections are the caller's, in float64. */
export interface AdamStepOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1 - beta1^t. */
  biasCorrection1: number;
  /** sqrt(1 - beta2^t). */
  biasCorrection2Sqrt: number;
  /** AdamW's decay of the parameter instead of the gradient. */
  decoupled: boolean;
  maximize: boolean;
}

/** @internal In place: param and its moments (and their running maximum, for AMSGrad) take one Adam step. */
export function adamStep(param: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor, maxExpAvgSq: Tensor | null, o: AdamStepOptions): void {
  N.adamStep(
    param._h, grad._h, expAvg._h, expAvgSq._h, maxExpAvgSq?._h ?? null, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay,
    o.biasCorrection1, o.biasCorrection2Sqrt, o.decoupled, o.maximize,
  );
}

const handles = (ts: readonly Tensor[]) => ts.map((t) => t._h);

/**
 * @internal In place: every parameter of params (one dtype, one device) and its momentum buffer (a list
 * parallel to params, or empty without momentum) take one SGD step from its gradient, in one native
 * call. lrTensor, when given (capturable: a 0-d float32/float64 tensor on the parameters' device), is
 * read on the device instead of o.lr.
 */
export function sgdStepMulti(params: readonly Tensor[], grads: readonly Tensor[], momentumBuffers: readonly Tensor[], lrTensor: Tensor | null, o: SgdStepOptions): void {
  N.sgdStepMulti(
    handles(params), handles(grads), handles(momentumBuffers), lrTensor?._h ?? null, o.lr, o.momentum, o.dampening, o.weightDecay,
    o.nesterov, o.maximize, o.firstStep,
  );
}

/**
 * @internal The device scalars of a capturable Adam step: the learning rate (0-d float32/float64) and
 * each parameter's step count (0-d float64, parallel to the parameters), read by the kernel, which
 * takes step count + 1 and writes it back.
 */
export interface AdamDeviceScalars {
  lr: Tensor;
  steps: readonly Tensor[];
}

/**
 * @internal In place: every parameter of params (one dtype, one device) and its moments (lists parallel
 * to params; maxExpAvgSqs empty without AMSGrad) take one Adam step, in one native call. With device
 * scalars (capturable) the lr and bias corrections of o are ignored: the kernel computes them from the
 * tensors and advances the step counts.
 */
export function adamStepMulti(
  params: readonly Tensor[], grads: readonly Tensor[], expAvgs: readonly Tensor[], expAvgSqs: readonly Tensor[], maxExpAvgSqs: readonly Tensor[],
  device: AdamDeviceScalars | null, o: AdamStepOptions,
): void {
  N.adamStepMulti(
    handles(params), handles(grads), handles(expAvgs), handles(expAvgSqs), handles(maxExpAvgSqs), handles(device?.steps ?? []),
    device?.lr._h ?? null, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, o.biasCorrection1, o.biasCorrection2Sqrt, o.decoupled, o.maximize,
  );
}

/**
 * @internal A new 0-d tensor of dtype on grads' device (dev) holding sum |g|^p over all of the contiguous
 * grads (max |g| for p = Infinity), accumulated in float64.
 */
export function gradNormPartial(grads: readonly Tensor[], normType: number, dtype: DType, dev: number): Tensor {
  const out = emptyTensor([], dtype, dev);
  fillOutputs([out], () => N.gradNormPartial(handles(grads), normType, out._h));
  return out;
}

/**
 * @internal From a partial, the norm (partial^(1/p)) and the clip coefficient min(1, maxNorm / (norm +
 * 1e-6)) (NaN for a NaN norm), both new 0-d tensors computed on the partial's device: norm in
 * normDType, the coefficient in the partial's dtype.
 */
export function clipCoefficient(partial: Tensor, normType: number, maxNorm: number, normDType: DType): { norm: Tensor; coef: Tensor } {
  const norm = emptyTensor([], normDType, partial._dev);
  const coef = emptyTensor([], partial.dtype, partial._dev);
  fillOutputs([norm, coef], () => N.clipCoefficient(partial._h, normType, maxNorm, norm._h, coef._h));
  return { norm, coef };
}

/** @internal In place: every contiguous grad *= scale (a one-element float32/float64 tensor, read on the device). */
export function scaleGrads(grads: readonly Tensor[], scale: Tensor): void {
  N.scaleGrads(handles(grads), scale._h);
  for (const g of grads) g._bumpVersion();
}
