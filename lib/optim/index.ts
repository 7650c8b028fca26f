// kiln.optim: optimizers (SGD, Adam, AdamW), learning-rate schedules, gradient norms and clipping.
export { Optimizer } from './optimizer';
export type { BaseOptions, ExecutionOptions, FlatRange, FlatState, ParamGroup, ParamGroupInput, Params, ParamState, OptimizerStateDict, StateSpec } from './optimizer';
export { SGD } from './sgd';
export type { SGDOptions } from './sgd';
export { Adam, AdamW } from './adam';
export type { AdamOptions } from './adam';
export {
  LRScheduler, LambdaLR, StepLR, MultiStepLR, ExponentialLR, LinearLR, LinearWarmupLR, CosineAnnealingLR, WarmupCosineLR, SequentialLR,
} from './lr_scheduler';
export type {
  Schedule, LRSchedulerStateDict, SchedulerOptions, LambdaLROptions, StepLROptions, MultiStepLROptions, ExponentialLROptions,
  LinearLROptions, LinearWarmupOptions, CosineAnnealingOptions, WarmupCosineOptions, SequentialLROptions,
} from './lr_scheduler';
export { clipGradNorm, gradNormPartial, scaleGrads_ } from './clip_grad';
export { groupsByName } from './groups';
export type { GroupRule } from './groups';
export type { ClipGradNormOptions } from './clip_grad';
