// kiln.train: the Trainer (fit with validation, accumulation, clipping, schedules, callbacks,
// progress, metrics, loss curve, checkpoint/resume, autocast) and the TrainStrategy its steps run
// through, random language-model windows, the generated toy language of `kiln train`, and SVG line
// charts.
export { Trainer, CHECKPOINT_FILE } from './trainer';
export { TrainStrategy } from './strategy';
export type { StepContext, MicroBatchInfo, StepEndInfo, StepAgreement } from './strategy';
export type { TrainerOptions, FitOptions, EvalOptions, BatchOptions, FitResult, StepInfo, EvalInfo, EvalResult, Callback, BatchSampler, BatchSource, MetricsRecord } from './trainer';
export { windowSampler } from './lm';
export type { WindowSource } from './lm';
export { toyCorpus, checkToyLine, scoreToyText, unigramEntropy } from './corpus';
export type { ToyCorpusOptions, ToyLineCheck, ToyScore } from './corpus';
export { lineChartSVG } from './plot';
export type { Series, ChartOptions } from './plot';
export { ProgressReporter } from './progress';
export type { ProgressMode, ProgressInfo, ProgressStream, BatchUnit } from './progress';
