// The Trainer: fit() runs optimizer steps over training batches (each step accumulating gradients
// over `gradAccumulation` micro-batches, clipping their global norm, stepping the optimizer and the
// LR schedule), evaluates on validation data every `evalInterval` steps, calls callbacks, shows
// progress, writes metrics as JSONL and a loss-curve SVG, and saves checkpoints that resume exactly:
// weights, optimizer, schedule, data position and random generator state. The step itself is a
// TrainStrategy's three parts (strategy.ts), which a distributed strategy wraps.
//
// Synchronization: the step's losses are summed on the device and kept there with the gradient
// norm; the Trainer reads all the steps of a logging interval back in one transfer (or earlier, when
// a callback reads StepInfo.loss), so the host does not wait for the device after every micro-batch.
//
// Memory: each micro-batch runs inside a tidy scope and the batches the Trainer draws from a
// DataLoader or BatchSampler are disposed after use, so native memory stays flat from step to step.
//
// Types: the Trainer is generic over its model, and fit() over the batch type, which it infers from
// the training data (a DataLoader of a Dataset<[Tensor, Tensor]> yields [Tensor, Tensor]); that is
// why the loss function is given to fit() with the data rather than to the constructor.
import { DistributedDataParallel } from '../dist/ddp';
import { DataParallelStrategy } from '../dist/strategy';
import * as fs from 'fs';
import * as path from 'path';
import { noGrad } from '../autograd/grad_mode';
import { autocast } from '../autocast';
import { DataLoader } from '../data/dataloader';
import { isFloating, isIntegral } from '../dtype';
import { deviceCode, deviceName } from '../device';
import { DeviceError, FormatError, KilnError, ValueError } from '../errors';
import { writeFileAtomic } from '../io/atomic';
import { disposeCheckpoint, readCheckpoint, saveCheckpoint } from '../io/checkpoint';
import { dispose, keep, tidy } from '../memory';
import type { Module } from '../nn/module';
import { getRngState, setRngState, RngState } from '../ops/random';
import { stack } from '../ops/shape';
import type { LRScheduler } from '../optim/lr_scheduler';
import type { Optimizer } from '../optim/optimizer';
import { Tensor } from '../tensor';
import { BatchFeed, GraphedStep, StepOutputs, checkGraphable, toDevice } from './graph_step';
import { lineChartSVG } from './plot';
import { BatchUnit, ProgressMode, ProgressReporter, ProgressStream, formatDuration, unitLabels } from './progress';
import { StepContext, TrainStrategy } from './strategy';

/** A source of training batches drawn one at a time (e.g. random windows of a token file). */
export interface BatchSampler<B> {
  /** A new batch; the Trainer disposes its tensors after use. */
  sample(): B;
  /** Where the sampler is (its generator state), for checkpoints. */
  stateDict?(): unknown;
  /** Restores the position stateDict() returned (on resume). */
  loadStateDict?(state: any): void;
}

/**
 * Batches: a DataLoader (epochs, shuffling, exact resume), a BatchSampler, or any iterable of batches
 * (an array for full-batch training; the Trainer does not dispose batches of plain iterables, so they
 * can be reused). Training cycles through epochs of a DataLoader or iterable as long as needed.
 */
export type BatchSource<B> = DataLoader<any, B> | BatchSampler<B> | Iterable<B>;

/** What onStepEnd callbacks receive after each optimizer step. */
export interface StepInfo {
  /** Optimizer steps done (this one included). */
  step: number;
  /**
   * Mean loss over the step's micro-batches. Read from the device on first access (with every step
   * not read yet, in one transfer): a callback that does not read it lets the device run ahead.
   */
  readonly loss: number;
  /** The learning rate this step used (first parameter group). */
  lr: number;
  /** Global gradient norm before clipping (null without clipping); read from the device like loss. */
  readonly gradNorm: number | null;
  /** Tokens, characters or samples (the trainer's unit) in this step's micro-batches. */
  count: number;
  /** count per second of this step (excludes evaluation and checkpoints). */
  throughput: number;
  /** Wall-clock seconds since the run started (resumed runs continue the count). */
  elapsed: number;
}

/** What onEval callbacks receive after each evaluation. */
export interface EvalInfo {
  /** Optimizer steps done when the evaluation ran. */
  step: number;
  /** The validation loss (weighted mean over the batches). */
  valLoss: number;
  /** The lowest validation loss of the run so far. */
  bestValLoss: number;
  /** The evalMetrics of this evaluation (weighted means over the batches); {} without evalMetrics. */
  metrics: Record<string, number>;
}

/** What Trainer.evaluateWithMetrics returns. */
export interface EvalResult {
  /** The mean validation loss (weighted by batch size). */
  loss: number;
  /** The weighted means of evalMetrics ({} without it). */
  metrics: Record<string, number>;
}

/** What fit() resolves with. */
export interface FitResult {
  /** Optimizer steps done in all (resumed steps included). */
  step: number;
  /** Loss of the last step. */
  trainLoss: number;
  /** Last validation loss (null without validation data). */
  valLoss: number | null;
  /** Lowest validation loss of the run (null without validation data). */
  bestValLoss: number | null;
  /** Validation loss before the first step (null when resumed or without validation data). */
  initialValLoss: number | null;
  /** The evalMetrics of the last evaluation ({} without validation data or evalMetrics). */
  valMetrics: Record<string, number>;
  /** Seconds the run has taken (resumed runs include the earlier part). */
  elapsed: number;
  /** Mean training throughput of this fit() call, in units per second. */
  throughput: number;
  /** What throughput counts (and what the losses are per, for language models). */
  unit: BatchUnit;
  /** True when stop() ended the run early. */
  stopped: boolean;
  /** Path of the last checkpoint written (null when none). */
  checkpoint: string | null;
}

/** Hooks into a run; each may be async (the Trainer awaits it). */
export interface Callback<M extends Module = Module> {
  /** Before the first step, with the step the run starts at (0, or the resumed step) and the total. */
  onFitStart?(trainer: Trainer<M>, info: { step: number; totalSteps: number }): void | Promise<void>;
  /** After each optimizer step. */
  onStepEnd?(trainer: Trainer<M>, info: StepInfo): void | Promise<void>;
  /** After each evaluation on the validation data. */
  onEval?(trainer: Trainer<M>, info: EvalInfo): void | Promise<void>;
  /** After a checkpoint was written to path. */
  onCheckpoint?(trainer: Trainer<M>, info: { step: number; path: string }): void | Promise<void>;
  /** When the run ends (also after stop()), with its result. */
  onFitEnd?(trainer: Trainer<M>, result: FitResult): void | Promise<void>;
}

/**
 * Options of a Trainer: the model and optimizer, and how steps, evaluation, logging and checkpoints
 * run.
 */
export interface TrainerOptions<M extends Module = Module> {
  /** The model to train; its parameters must be on options.device when that is set. */
  model: M;
  /** An optimizer over the model's parameters. */
  optimizer: Optimizer<any>;
  /**
   * An LR schedule, or a function making one once the number of steps is known. Stepped after each
   * optimizer step. A resumed run calls the function with the steps the run was first planned for,
   * so that training longer keeps the schedule the run started with.
   */
  scheduler?: LRScheduler | ((optimizer: Optimizer<any>, totalSteps: number) => LRScheduler) | null;
  /** Micro-batches per optimizer step; each backward uses loss / gradAccumulation (default 1). */
  gradAccumulation?: number;
  /** Clip the global gradient norm to this before each step (default: no clipping). */
  clipGradNorm?: number | null;
  /** Evaluate every this many steps (default: at the start and the end only). */
  evalInterval?: number | null;
  /** Batches per evaluation (default: all of a DataLoader or iterable; required for a BatchSampler). */
  evalBatches?: number | null;
  /** Evaluate before the first step too (default true when there is validation data and the run is not resumed). */
  evalAtStart?: boolean;
  /** Folder for metrics.jsonl, loss.svg and checkpoint.safetensors (default: none written). */
  outDir?: string | null;
  /** Save a checkpoint every this many steps, and at the end (default: at the end only; needs outDir). */
  checkpointInterval?: number | null;
  /**
   * Steps between metrics records and progress lines (default 1). The losses of an interval's steps
   * stay on the device and are read back together at its end: one wait for the device per interval.
   */
  logInterval?: number;
  /** 'auto' (default): a live bar on a terminal, else a line every logInterval steps; or 'bar', 'log', 'none'. */
  progress?: ProgressMode | 'auto';
  /** Where progress goes (default process.stderr). */
  progressStream?: ProgressStream;
  /** Hooks called during fit(), in order. */
  callbacks?: Callback<M>[];
  /** What batches are counted in (default: 'token' when a batch's first tensor holds integers, token ids; else 'sample'). */
  unit?: BatchUnit;
  /**
   * Moves each batch's tensors to this device before the loss, as a training loop's `x.to(device)`
   * would (default: batches stay where they are). The model must be there already.
   */
  device?: string | null;
  /** More JSON to keep in checkpoints (model config, tokenizer, ...), under state.extra. */
  extraState?: () => Record<string, unknown>;
  /** Title of the loss-curve chart. */
  title?: string;
  /**
   * 'bfloat16' runs each micro-batch's forward (and each validation batch) under
   * autocast({ dtype: 'bfloat16' }): matmul-like ops compute in bfloat16 while the parameters, their
   * gradients and the optimizer stay float32 (master weights); backward runs with autocast off.
   * Default false.
   */
  autocast?: 'bfloat16' | false;
  /**
   * How a training step runs (default: a TrainStrategy, one process). A data-parallel or sharded
   * strategy subclasses TrainStrategy and overrides forwardBackward, beforeStep or step.
   */
  strategy?: TrainStrategy<M>;
  /**
   * Capture the training step (forward and backward of every micro-batch, clipping, the optimizer
   * step) as a CUDA graph after 2 eager steps and replay it for the steps after, each on its batches
   * copied into the graph's inputs: no JavaScript and no launch per op (kiln.cuda.CUDAGraph). Needs
   * one process (the default strategy), a model on a GPU and an optimizer made with
   * `capturable: true`; the LR schedule steps between replays. A step whose batch shapes differ from
   * the captured ones runs eagerly. Nothing in the step may draw random numbers (dropout must be 0)
   * or read a tensor. Default false.
   */
  cudaGraph?: boolean;
}

/** One training step's results: StepOutputs, the lr it ran with and the batch size it counted. */
type StepResult = StepOutputs & { lr: number; count: number };

/** How the Trainer reads batches of type B: their loss and their size. */
export interface BatchOptions<M extends Module, B> {
  /**
   * The loss of one micro-batch, a scalar tensor. Default: model.forward(...batch) (batch spread
   * when it is an array), taking its `loss` when it returns an object (as GPT does with targets).
   */
  loss?: (model: M, batch: B) => Tensor;
  /** Tokens, characters or samples in a batch. Default: numel of its first tensor for tokens and chars, its first dimension for samples. */
  countBatch?: (batch: B) => number;
  /**
   * Validation metrics besides the loss (e.g. accuracy): for one validation batch, each metric's mean
   * over the batch. They are averaged over the batches weighted by countBatch, as the loss is, and
   * reported in onEval, metrics.jsonl (as val_<name>), the progress lines and the fit result. Runs
   * after the batch's loss, in eval mode without gradients (its forward is a second one).
   */
  evalMetrics?: (model: M, batch: B) => Record<string, number>;
}

export interface FitOptions<M extends Module, B> extends BatchOptions<M, B> {
  /** The training batches; their type B is what loss and countBatch receive. */
  train: BatchSource<B>;
  /** Validation batches, evaluated every evalInterval steps and at the end (default: none). */
  val?: BatchSource<B> | null;
  /** Train until this many optimizer steps have been done in all (resumed steps count). */
  steps?: number;
  /** Or train for this many passes over train (a DataLoader or array). */
  epochs?: number;
  /**
   * A checkpoint file, or a folder holding checkpoint.safetensors, to continue from. The LR
   * schedule keeps the number of steps the run was first planned for, even when steps is larger now.
   */
  resume?: string | null;
}

export interface EvalOptions<M extends Module, B> extends BatchOptions<M, B> {
  /** Batches to evaluate (default: options.evalBatches, else all; a BatchSampler needs a count). */
  maxBatches?: number | null;
}

/** The checkpoint file of a run folder. */
export const CHECKPOINT_FILE = 'checkpoint.safetensors';

/**
 * The line a resumed run starts with. plannedSteps: what the LR schedule was planned for (null
 * without a schedule factory, or when unknown); file: the checkpoint, when worth naming.
 */
export function resumeNotice(step: number, totalSteps: number, plannedSteps: number | null, file?: string): string {
  let line = `resumed from step ${step}${file ? ` of ${file}` : ''}; `;
  line += step < totalSteps ? `training to step ${totalSteps}` : `nothing to train (${totalSteps} steps asked for)`;
  if (plannedSteps !== null && plannedSteps !== totalSteps) line += `; the LR schedule keeps its plan of ${plannedSteps} steps (not re-planned for ${totalSteps})`;
  return line;
}

function isSampler<B>(s: BatchSource<B>): s is BatchSampler<B> {
  return typeof (s as BatchSampler<B>).sample === 'function';
}

/** A training source read batch after batch, starting new epochs of iterables as needed. */
class Stream<B> {
  private it: Iterator<B> | null = null;
  constructor(readonly src: BatchSource<B>) {
    if (!isSampler(src) && typeof (src as Iterable<B>)[Symbol.iterator] !== 'function') {
      throw new ValueError('Trainer', 'training data must be a DataLoader, a BatchSampler ({sample()}) or an iterable of batches');
    }
  }

  /** Whether the Trainer owns (and disposes) the batches. */
  get owned(): boolean {
    return isSampler(this.src) || this.src instanceof DataLoader;
  }

  next(): B {
    if (isSampler(this.src)) return this.src.sample();
    for (let fresh = 0; fresh < 2; fresh++) {
      if (!this.it) this.it = (this.src as Iterable<B>)[Symbol.iterator]();
      const r = this.it.next();
      if (!r.done) return r.value;
      this.it = null;
    }
    throw new ValueError('Trainer', 'the training data yielded no batches');
  }

  /** Batches per epoch, when known. */
  get epochLength(): number | null {
    if (this.src instanceof DataLoader) return this.src.length;
    return Array.isArray(this.src) ? this.src.length : null;
  }

  stateDict(): unknown {
    if (this.src instanceof DataLoader) return this.src.stateDict();
    return isSampler(this.src) ? (this.src.stateDict?.() ?? null) : null;
  }

  loadStateDict(s: unknown): void {
    this.it?.return?.();
    this.it = null;
    if (this.src instanceof DataLoader) this.src.loadStateDict(s as never);
    else if (isSampler(this.src) && s != null) this.src.loadStateDict?.(s);
  }
}

/** The first tensor inside a batch (arrays and plain objects are searched in order). */
function firstTensor(b: unknown): Tensor | null {
  if (b instanceof Tensor) return b;
  const items = Array.isArray(b) ? b : b !== null && typeof b === 'object' ? Object.values(b) : [];
  for (const x of items) {
    const t = firstTensor(x);
    if (t) return t;
  }
  return null;
}

/** The unit of a batch whose unit was not given: token ids make it a language model's. */
function inferUnit(batch: unknown): BatchUnit {
  const t = firstTensor(batch);
  return t && isIntegral(t.dtype) ? 'token' : 'sample';
}

function defaultCount(batch: unknown, unit: BatchUnit): number {
  const t = firstTensor(batch);
  if (!t) return 0;
  if (unit !== 'sample') return t.numel;
  return t.ndim ? t.shape[0] : 1;
}

function defaultLoss(model: Module, batch: unknown): Tensor {
  const out = model.forward(...(Array.isArray(batch) ? batch : [batch]));
  if (out instanceof Tensor) return out;
  const loss = out !== null && typeof out === 'object' ? (out as { loss?: unknown }).loss : undefined;
  if (loss instanceof Tensor) return loss;
  throw new ValueError('Trainer', 'model.forward(...batch) returned neither a loss tensor nor an object with one; pass a loss function to fit()');
}

function checkCount(name: string, v: unknown, min = 1): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ValueError('Trainer', `${name} must be an integer >= ${min}, got ${String(v)}`);
  return v;
}

/** The step's loss and gradient norm: tensors on the device until the Trainer reads them. */
class StepValues {
  lossValue = NaN;
  gradNormValue: number | null = null;
  constructor(
    readonly step: number,
    public loss: Tensor | null,
    public gradNorm: Tensor | null,
  ) {}
}

/**
 * StepInfo whose loss and gradNorm read the step's values (from the device on first access). They are
 * own enumerable getters, so `{ ...info }` and JSON.stringify(info) carry the numbers like a plain object.
 */
class StepRecord implements StepInfo {
  declare readonly loss: number;
  declare readonly gradNorm: number | null;

  constructor(
    values: StepValues,
    read: () => void,
    readonly step: number,
    readonly lr: number,
    readonly count: number,
    readonly throughput: number,
    readonly elapsed: number,
  ) {
    const value = <K extends 'lossValue' | 'gradNormValue'>(key: K) => () => {
      if (values.loss) read();
      return values[key];
    };
    Object.defineProperty(this, 'loss', { get: value('lossValue'), enumerable: true });
    Object.defineProperty(this, 'gradNorm', { get: value('gradNormValue'), enumerable: true });
  }
}

interface TrainerState {
  /** Optimizer steps done. */
  step: number;
  elapsed: number;
  /** Units trained on (the key predates units, and checkpoints keep it). */
  tokens: number;
  bestValLoss: number | null;
  lastValLoss: number | null;
  /** The evalMetrics of the last evaluation (kept in checkpoints, so a resumed run reports them). */
  lastValMetrics?: Record<string, number>;
  /** The steps the run was first planned for, which a schedule factory is given on resume (null: unknown, older checkpoints). */
  plannedSteps: number | null;
}

/**
 * A metrics record (one line of metrics.jsonl). Losses are nats per token or per char for language
 * models; the throughput field is named after the unit: tokens_per_s, chars_per_s or samples_per_s.
 */
export interface MetricsRecord {
  /** Optimizer steps done. */
  step: number;
  /** Mean training loss of the step. */
  loss: number;
  /** Validation loss, on steps where an evaluation ran. */
  val_loss?: number;
  /** The evalMetrics of an evaluation, as val_<name> (e.g. val_accuracy). */
  [valMetric: `val_${string}`]: number | undefined;
  /** Learning rate of the step. */
  lr: number;
  /** Throughput when the unit is 'token'. */
  tokens_per_s?: number;
  /** Throughput when the unit is 'char'. */
  chars_per_s?: number;
  /** Throughput when the unit is 'sample'. */
  samples_per_s?: number;
  /** Seconds since the run started (resumed runs continue the count). */
  elapsed_s: number;
  /** Global gradient norm before clipping (with clipGradNorm). */
  grad_norm?: number;
}

/**
 * Trains a model. fit() runs optimizer steps over training batches (each step accumulating gradients
 * over gradAccumulation micro-batches, clipping their global norm, stepping the optimizer and the LR
 * schedule), evaluates on validation data every evalInterval steps, calls callbacks, shows progress,
 * writes metrics.jsonl and a loss-curve SVG, and saves checkpoints that resume exactly (weights,
 * optimizer, schedule, data position, generator state). Each micro-batch runs in a tidy scope and
 * batches drawn from a DataLoader or BatchSampler are disposed after use, so memory stays flat.
 *
 * The Trainer is generic over its model, and fit() over the batch type, inferred from the training
 * data: a loss function written inline gets both types.
 *
 * ```ts
 * const trainer = new train.Trainer({ model, optimizer: new optim.AdamW(model.parameters(), { lr: 3e-4 }) });
 * await trainer.fit({ train: loader, val, steps: 1000, loss: (m, [x, y]) => nn.mseLoss(m.forward(x), y) });
 * ```
 */
export class Trainer<M extends Module = Module> {
  /** The model being trained. */
  readonly model: M;
  /** The optimizer stepping it. */
  readonly optimizer: Optimizer<any>;
  /**
   * The LR schedule: the one given, or the one the factory made at the start of fit() (null without).
   */
  scheduler: LRScheduler | null = null;
  /** The parts of each training step (options.strategy, else the single-process default). */
  readonly strategy: TrainStrategy<M>;
  private readonly opts: TrainerOptions<M>;
  private readonly accum: number;
  private readonly device: string | null;
  private readonly callbacks: Callback<M>[];
  private state: TrainerState = { step: 0, elapsed: 0, tokens: 0, bestValLoss: null, lastValLoss: null, plannedSteps: null };
  private currentUnit: BatchUnit | null;
  private stopRequested = false;
  private trainHistory: Array<[number, number]> = [];
  private valHistory: Array<[number, number]> = [];
  /** The first non-finite loss read in this fit() (thrown by checkLoss). */
  private badLoss: { step: number; value: number } | null = null;
  /** Steps whose loss is still on the device, oldest first. */
  private pending: StepValues[] = [];
  /** The captured step of the cudaGraph option (made by fit()). */
  private graphed: GraphedStep | null = null;

  /**
   * A trainer for opts.model; a ValueError for bad options, a DeviceError when the model's parameters
   * are not on opts.device.
   */
  constructor(opts: TrainerOptions<M>) {
    if (!opts || !opts.model || !opts.optimizer) throw new ValueError('Trainer', 'needs a model and an optimizer');
    for (const moved of ['loss', 'tokensPerBatch']) {
      if (moved in opts) throw new ValueError('Trainer', `${moved} is an option of fit() now (fit({ train, loss, countBatch }) knows the batch type)`);
    }
    this.opts = opts;
    this.model = opts.model;
    this.optimizer = opts.optimizer;
    this.accum = checkCount('gradAccumulation', opts.gradAccumulation) ?? 1;
    checkCount('evalInterval', opts.evalInterval);
    checkCount('evalBatches', opts.evalBatches);
    checkCount('checkpointInterval', opts.checkpointInterval);
    checkCount('logInterval', opts.logInterval);
    if (opts.clipGradNorm != null && !(opts.clipGradNorm > 0)) throw new ValueError('Trainer', `clipGradNorm must be > 0, got ${opts.clipGradNorm}`);
    if (opts.unit !== undefined && !['token', 'char', 'sample'].includes(opts.unit)) throw new ValueError('Trainer', `unit must be 'token', 'char' or 'sample', got ${String(opts.unit)}`);
    this.currentUnit = opts.unit ?? null;
    this.device = opts.device ? deviceName(deviceCode('Trainer', opts.device)) : null;
    const at = opts.model.parameters()[0]?.device;
    if (this.device && at && at !== this.device) {
      throw new DeviceError('Trainer', `device is ${this.device} but the model's parameters are on ${at}; call model.to('${this.device}') first`);
    }
    if (opts.scheduler && typeof opts.scheduler !== 'function') this.scheduler = opts.scheduler;
    this.callbacks = opts.callbacks ?? [];
    if (opts.autocast !== undefined && opts.autocast !== false && opts.autocast !== 'bfloat16') {
      throw new ValueError('Trainer', `autocast must be 'bfloat16' or false, got ${String(opts.autocast)}`);
    }
    if (opts.strategy !== undefined && !(opts.strategy instanceof TrainStrategy)) throw new ValueError('Trainer', 'strategy must be a TrainStrategy');
    // A data-parallel model trains with the data-parallel strategy unless one is given.
    this.strategy = opts.strategy ?? (opts.model instanceof DistributedDataParallel ? new DataParallelStrategy<M>() : new TrainStrategy<M>());
    if (opts.cudaGraph !== undefined && typeof opts.cudaGraph !== 'boolean') throw new ValueError('Trainer', `cudaGraph must be a boolean, got ${String(opts.cudaGraph)}`);
    if (opts.cudaGraph) checkGraphable(this.model, this.optimizer, this.strategy);
  }

  /** Optimizer steps done so far. */
  get step(): number {
    return this.state.step;
  }

  /** What batches are counted in: the unit option, else what the first batch showed (null before any). */
  get unit(): BatchUnit | null {
    return this.currentUnit;
  }

  /** Ends fit() after the current step (a checkpoint is still written when there is an outDir). */
  stop(): void {
    this.stopRequested = true;
  }

  /** The loss-curve points so far. */
  get history(): {
    /** [step, training loss] of every step. */
    train: Array<[number, number]>;
    /** [step, validation loss] of every evaluation. */
    val: Array<[number, number]>;
  } {
    return { train: [...this.trainHistory], val: [...this.valHistory] };
  }

  /** The size of batch in the trainer's unit (settling the unit on the first batch). */
  private countOf<B>(batch: B, bo: BatchOptions<M, B>): number {
    this.currentUnit ??= inferUnit(batch);
    return bo.countBatch ? bo.countBatch(batch) : defaultCount(batch, this.currentUnit);
  }

  /**
   * The loss of one batch: moved to the trainer's device first (inside the caller's tidy scope, which
   * frees the copies), the loss function run under the autocast option, checked to be a loss.
   */
  private lossOf<B>(batch: B, bo: BatchOptions<M, B>): Tensor {
    const b = this.device ? toDevice(batch, this.device) : batch;
    const forward = () => (bo.loss ? bo.loss(this.model, b) : defaultLoss(this.model, b));
    const loss = this.opts.autocast ? autocast({ dtype: this.opts.autocast }, forward) : forward();
    if (!(loss instanceof Tensor) || loss.numel !== 1 || !isFloating(loss.dtype)) {
      throw new ValueError('Trainer', 'the loss must be a floating point tensor with one element');
    }
    return loss;
  }

  /** What the strategy's parts see during fit(). */
  private context<B>(bo: BatchOptions<M, B>): StepContext<M> {
    const trainer = this;
    return {
      model: this.model,
      optimizer: this.optimizer,
      get scheduler() {
        return trainer.scheduler;
      },
      gradAccumulation: this.accum,
      clipGradNorm: this.opts.clipGradNorm ?? null,
      loss: (batch) => this.lossOf(batch as B, bo),
    };
  }

  /**
   * forwardBackward over the window's micro-batches (each in its own tidy scope); returns their summed
   * loss on the device (float32 at least) and reports each batch's size to counted.
   */
  private forwardBackwardWindow<B>(stream: BatchFeed<B>, ctx: StepContext<M>, bo: BatchOptions<M, B>, counted: (n: number) => void): Tensor {
    const k = this.accum;
    let sum: Tensor | null = null;
    try {
      for (let i = 0; i < k; i++) {
        const batch = stream.next();
        try {
          counted(this.countOf(batch, bo));
          const loss = tidy(() => this.strategy.forwardBackward(ctx, batch, { index: i, isLastMicroBatch: i === k - 1 }));
          // Summed in float32 at least (a bfloat16 loss would round the sum), on the device.
          const l = loss.dtype === 'float64' || loss.dtype === 'float32' ? loss : noGrad(() => loss.to('float32'));
          if (l !== loss) loss.dispose();
          if (sum) {
            const prev: Tensor = sum;
            sum = noGrad(() => prev.add(l));
            prev.dispose();
            l.dispose();
          } else {
            sum = l;
          }
        } finally {
          if (stream.owned) dispose(batch);
        }
      }
    } catch (e) {
      dispose(sum);
      throw e;
    }
    return sum!;
  }

  /**
   * One optimizer step over gradAccumulation micro-batches from stream, through the strategy's parts.
   * The mean loss (float64 for float64 losses, else float32) and the gradient norm stay on the device.
   */
  private async trainStep<B>(stream: Stream<B>, ctx: StepContext<M>, bo: BatchOptions<M, B>): Promise<StepResult> {
    if (this.graphed) return this.graphedStep(stream, ctx, bo);
    let count = 0;
    const sum = this.forwardBackwardWindow(stream, ctx, bo, (n) => (count += n));
    const lr = this.optimizer.paramGroups[0].lr;
    let gradNorm: Tensor | null = null;
    try {
      await this.strategy.synchronize(ctx);
      gradNorm = tidy(() => this.strategy.beforeStep(ctx));
      tidy(() => this.strategy.step(ctx));
      await this.strategy.finishStep(ctx);
    } catch (e) {
      dispose([sum, gradNorm]);
      throw e;
    }
    return { loss: this.meanLoss(sum), gradNorm, lr, count };
  }

  /** The window's mean loss from its sum (sum itself for one micro-batch, else freed). */
  private meanLoss(sum: Tensor): Tensor {
    if (this.accum === 1) return sum;
    const mean = noGrad(() => sum.div(this.accum));
    sum.dispose();
    return mean;
  }

  /**
   * The cudaGraph option's step: the window's batches, then the step's work
   * (forward and backward of each micro-batch, beforeStep, the optimizer step: the default strategy's
   * parts without the LR schedule) run eagerly, captured or replayed by GraphedStep; the schedule
   * steps after it, outside the graph.
   */
  private graphedStep<B>(stream: Stream<B>, ctx: StepContext<M>, bo: BatchOptions<M, B>): StepResult {
    const raw = Array.from({ length: this.accum }, () => stream.next());
    const count = raw.reduce((n: number, b) => n + this.countOf(b, bo), 0);
    const lr = this.optimizer.paramGroups[0].lr;
    // The step's parts without the schedule, which is host state a replay would not advance.
    const stepCtx: StepContext<M> = Object.create(ctx, { scheduler: { value: null } });
    let result: StepOutputs;
    try {
      result = this.graphed!.step(raw, (batches) => {
        let i = 0;
        const sum = this.forwardBackwardWindow({ next: () => batches[i++] as B, owned: false }, stepCtx, bo, () => {});
        const gradNorm = tidy(() => this.strategy.beforeStep(stepCtx));
        tidy(() => this.strategy.step(stepCtx));
        return { loss: this.meanLoss(sum), gradNorm };
      });
    } finally {
      if (stream.owned) raw.forEach((b) => dispose(b));
    }
    ctx.scheduler?.step();
    return { ...result, lr, count };
  }

  /**
   * Reads every pending step's loss and gradient norm back from the device in one transfer, adds the
   * losses to the history and notes the first that is not finite (checkLoss throws for it).
   */
  private readPending(): void {
    const steps = this.pending;
    if (!steps.length) return;
    this.pending = [];
    const withNorm = steps.map((v) => v.gradNorm !== null);
    const ts = steps.flatMap((v) => (v.gradNorm ? [v.loss!, v.gradNorm] : [v.loss!]));
    // A float64 loss keeps its precision; a one-element loss of any shape ([1], [1, 1]) reads as a scalar.
    const dtype = ts.some((x) => x.dtype === 'float64') ? 'float64' : 'float32';
    let values: ArrayLike<number>;
    try {
      values = tidy(() => stack(ts.map((x) => x.reshape([]).to(dtype))).dataSync() as Float32Array | Float64Array);
    } finally {
      for (const x of ts) x.dispose();
      for (const v of steps) v.loss = v.gradNorm = null;
    }
    let i = 0;
    steps.forEach((v, k) => {
      v.lossValue = values[i++];
      if (withNorm[k]) v.gradNormValue = values[i++];
    });
    for (const v of steps) {
      this.trainHistory.push([v.step, v.lossValue]);
      if (!Number.isFinite(v.lossValue)) this.badLoss ??= { step: v.step, value: v.lossValue };
    }
  }

  /**
   * Throws for the first non-finite loss readPending saw. Not thrown from the read itself: a
   * callback reading info.loss must not make one process leave the others in a collective.
   */
  private checkLoss(): void {
    const bad = this.badLoss;
    if (bad) throw new ValueError('Trainer', `the loss became ${bad.value} at step ${bad.step}; lower the learning rate or clip gradients`);
  }

  /** The mean loss over validation batches (weighted by their size), in eval mode without gradients. */
  evaluate<B>(val: BatchSource<B>, eo: EvalOptions<M, B> = {}): number {
    return this.evaluateWithMetrics(val, eo).loss;
  }

  /** evaluate(), with the weighted means of eo.evalMetrics over the same batches. */
  evaluateWithMetrics<B>(val: BatchSource<B>, eo: EvalOptions<M, B> = {}): EvalResult {
    if (typeof eo !== 'object' || eo === null) {
      throw new ValueError('Trainer.evaluate', `options must be an object, e.g. evaluate(val, { maxBatches: ${JSON.stringify(eo)} }); got ${JSON.stringify(eo)}`);
    }
    const maxBatches = eo.maxBatches === undefined ? (this.opts.evalBatches ?? null) : eo.maxBatches;
    if (isSampler(val) && !maxBatches) throw new ValueError('Trainer.evaluate', 'a BatchSampler as validation data needs evalBatches');
    const owned = isSampler(val) || val instanceof DataLoader;
    const wasTraining = this.model.training;
    this.model.eval();
    let sum = 0, weight = 0, n = 0;
    const sums: Record<string, number> = {};
    try {
      noGrad(() => {
        const take = (batch: B): void => {
          try {
            const w = this.countOf(batch, eo) || 1;
            sum += tidy(() => this.lossOf(batch, eo).item()) * w;
            if (eo.evalMetrics) {
              for (const [k, v] of Object.entries(this.metricsOf(batch, eo.evalMetrics))) sums[k] = (sums[k] ?? 0) + v * w;
            }
            weight += w;
          } finally {
            if (owned) dispose(batch);
          }
        };
        if (isSampler(val)) {
          for (; n < maxBatches!; n++) take(val.sample());
        } else {
          for (const batch of val as Iterable<B>) {
            if (maxBatches && n >= maxBatches) {
              if (owned) dispose(batch);
              break;
            }
            take(batch);
            n++;
          }
        }
      });
    } finally {
      this.model.train(wasTraining);
    }
    if (weight === 0) throw new ValueError('Trainer.evaluate', 'the validation data yielded no batches');
    return { loss: sum / weight, metrics: Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / weight])) };
  }

  /** evalMetrics of one batch (moved to the device, under the autocast option), checked to be finite numbers. */
  private metricsOf<B>(batch: B, fn: (model: M, batch: B) => Record<string, number>): Record<string, number> {
    return tidy(() => {
      const b = this.device ? toDevice(batch, this.device) : batch;
      const m = this.opts.autocast ? autocast({ dtype: this.opts.autocast }, () => fn(this.model, b)) : fn(this.model, b);
      if (typeof m !== 'object' || m === null || !Object.values(m).every((v) => typeof v === 'number' && Number.isFinite(v))) {
        throw new ValueError('Trainer', `evalMetrics must return an object of finite numbers, got ${JSON.stringify(m)}`);
      }
      if ('loss' in m) throw new ValueError('Trainer', "evalMetrics cannot name a metric 'loss' (the validation loss is reported as val_loss already)");
      return m;
    });
  }

  /**
   * Trains until fo.steps optimizer steps have been done in all (resumed steps count), or for
   * fo.epochs passes over fo.train; resumes from fo.resume first when given. Resolves with the run's
   * result once it is done (or stop() was called).
   */
  async fit<B>(fo: FitOptions<M, B>): Promise<FitResult> {
    const opts = this.opts;
    const stream = new Stream(fo.train);
    const val = fo.val ?? null;
    if (val && isSampler(val) && !opts.evalBatches) throw new ValueError('Trainer', 'a BatchSampler as validation data needs evalBatches');
    let total: number;
    if (fo.steps !== undefined) {
      total = checkCount('steps', fo.steps, 0)!;
    } else if (fo.epochs !== undefined) {
      const per = stream.epochLength;
      if (per === null) throw new ValueError('Trainer', 'epochs needs training data of known length (a DataLoader or an array); pass steps');
      if (!(fo.epochs > 0)) throw new ValueError('Trainer', `epochs must be > 0, got ${fo.epochs}`);
      total = Math.ceil((fo.epochs * per) / this.accum);
    } else {
      throw new ValueError('Trainer', 'fit needs steps or epochs');
    }
    // Every process checkpoints together (a sharded optimizer gathers its state); only the main one
    // (rank 0) writes files and shows progress.
    const checkpointDir = opts.outDir ?? null;
    const isMain = this.strategy.isMainProcess();
    const outDir = isMain ? checkpointDir : null;
    if (outDir) fs.mkdirSync(outDir, { recursive: true });

    const ctx = this.context(fo);
    // Data parallelism: rank 0's weights in place before a resume overwrites them or anything reads them.
    await this.strategy.beforeFit(ctx);
    const resumed = !!fo.resume;
    if (fo.resume) {
      this.resume(fo.resume, stream, val, total);
    } else {
      this.resetHistory();
      this.state.plannedSteps = total;
      this.planSchedule(total);
    }
    const metrics = outDir ? this.openMetrics(outDir, resumed) : null;
    const logInterval = opts.logInterval ?? 1;
    const mode: ProgressMode = !isMain ? 'none' : !opts.progress || opts.progress === 'auto' ? (opts.progressStream ?? process.stderr).isTTY ? 'bar' : 'log' : opts.progress;
    const runStart = Date.now() - this.state.elapsed * 1000;
    const elapsed = () => (Date.now() - runStart) / 1000;
    let checkpoint: string | null = null;
    let savedStep = -1;
    let initialValLoss: number | null = null;
    this.stopRequested = false;
    let stopAgreed = false;
    this.model.train();
    this.optimizer.zeroGrad();
    this.graphed = opts.cudaGraph ? new GraphedStep(this.optimizer, this.device ?? this.model.parameters()[0].device) : null;

    for (const cb of this.callbacks) await cb.onFitStart?.(this, { step: this.state.step, totalSteps: total });
    const progress = new ProgressReporter(mode, total, this.state.step, logInterval, opts.progressStream);
    if (resumed) progress.log(resumeNotice(this.state.step, total, typeof opts.scheduler === 'function' ? this.state.plannedSteps : null));
    let valMetrics: Record<string, number> = this.state.lastValMetrics ?? {};
    const valLine = (v: number) => {
      const unit = unitLabels(this.currentUnit!).loss;
      const extra = Object.entries(valMetrics).map(([k, x]) => ` | val ${k} ${Number(x.toPrecision(4))}`).join('');
      return `step ${this.state.step}: val loss ${v.toFixed(4)}${unit ? ` ${unit}` : ''}${extra}`;
    };
    const metricFields = (): Partial<MetricsRecord> => Object.fromEntries(Object.entries(valMetrics).map(([k, x]) => [`val_${k}`, x]));
    const doEval = async (): Promise<number> => {
      const { loss: v, metrics: m } = this.evaluateWithMetrics(val!, fo);
      valMetrics = m;
      this.state.lastValMetrics = m;
      this.state.lastValLoss = v;
      if (this.state.bestValLoss === null || v < this.state.bestValLoss) this.state.bestValLoss = v;
      this.valHistory.push([this.state.step, v]);
      for (const cb of this.callbacks) await cb.onEval?.(this, { step: this.state.step, valLoss: v, bestValLoss: this.state.bestValLoss, metrics: m });
      return v;
    };
    const save = async (): Promise<void> => {
      if (!checkpointDir) return;
      checkpoint = path.join(checkpointDir, CHECKPOINT_FILE);
      this.state.elapsed = elapsed();
      await this.strategy.beforeCheckpoint(ctx);
      if (isMain) this.saveTo(checkpoint, stream, val);
      savedStep = this.state.step;
      for (const cb of this.callbacks) await cb.onCheckpoint?.(this, { step: this.state.step, path: checkpoint });
    };

    this.pending = [];
    this.badLoss = null;
    let lastStep: StepValues | null = null;
    let runCount = 0, runTime = 0, emaStep = 0;
    let logCount = 0, logTime = 0;
    try {
      if (val && (opts.evalAtStart ?? !resumed) && this.state.step < total) {
        initialValLoss = await doEval();
        progress.log(valLine(initialValLoss));
        metrics?.write({ step: this.state.step, val_loss: initialValLoss, ...metricFields(), elapsed_s: elapsed() });
      }
      // A stop() from onFitStart ends the run before its first step, on every process.
      stopAgreed = (await this.strategy.agreeAfterStep(ctx, { stopRequested: this.stopRequested, loss: null })).stop;
      while (this.state.step < total && !stopAgreed) {
        const t0 = process.hrtime.bigint();
        const s = await this.trainStep(stream, ctx, fo);
        const dt = Number(process.hrtime.bigint() - t0) / 1e9;
        this.state.step++;
        this.state.tokens += s.count;
        runCount += s.count;
        runTime += dt;
        logCount += s.count;
        logTime += dt;
        emaStep = emaStep === 0 ? dt : 0.9 * emaStep + 0.1 * dt;
        const step = this.state.step;
        // A second handle on the loss for agreeAfterStep (no copy): a callback's read of info.loss
        // frees the first.
        const lossHandle = s.loss.detach();
        const values = new StepValues(step, keep(s.loss), s.gradNorm && keep(s.gradNorm));
        this.pending.push(values);
        lastStep = values;
        const info = new StepRecord(values, () => this.readPending(), step, s.lr, s.count, s.count / dt, elapsed());
        for (const cb of this.callbacks) await cb.onStepEnd?.(this, info);

        // stop() requests stay local; the strategy decides when every process stops together.
        let agreed;
        try {
          agreed = await this.strategy.agreeAfterStep(ctx, { stopRequested: this.stopRequested, loss: lossHandle });
        } finally {
          lossHandle.dispose();
        }
        stopAgreed = agreed.stop;
        if (agreed.lossFinite === false) {
          this.readPending();
          this.checkLoss();   // names this process's step when the loss here is the bad one
          throw new ValueError('Trainer', `the loss became non-finite at step ${step} on another process; lower the learning rate or clip gradients`);
        }
        this.checkLoss();   // a callback may have read a non-finite loss
        const last = step === total || stopAgreed;
        const checkpointNow = (opts.checkpointInterval && step % opts.checkpointInterval === 0) || last;
        let v: number | null = null;
        if (val && ((opts.evalInterval && step % opts.evalInterval === 0) || (last && !stopAgreed))) {
          v = await doEval();
          if (mode === 'bar' || Object.keys(valMetrics).length) progress.log(valLine(v));
        }
        const logNow = step % logInterval === 0 || v !== null || last;
        // The interval's losses, read together (also before a checkpoint: a NaN run is not saved).
        if (logNow || checkpointNow) {
          this.readPending();
          this.checkLoss();
        }
        if (metrics && logNow) {
          const rec: MetricsRecord = { step, loss: values.lossValue, lr: s.lr, elapsed_s: info.elapsed };
          rec[unitLabels(this.currentUnit!).metricsField] = logCount / logTime;
          if (v !== null) Object.assign(rec, { val_loss: v, ...metricFields() });
          if (values.gradNormValue !== null) rec.grad_norm = values.gradNormValue;
          metrics.write(rec);
          logCount = logTime = 0;
        }
        const shown = this.trainHistory[this.trainHistory.length - 1];
        progress.update({
          step, total, loss: shown ? shown[1] : NaN, valLoss: this.state.lastValLoss, lr: s.lr, unit: this.currentUnit!,
          throughput: s.count / emaStep, elapsed: info.elapsed, eta: (total - step) * emaStep,
        });
        if (outDir && v !== null) this.writeChart(outDir);
        if (checkpointNow) await save();
        // Let timers (the progress bar), signal handlers and I/O run between steps.
        await new Promise((r) => setImmediate(r));
      }
      this.readPending();
      this.checkLoss();
      // stop() from a signal handler lands between steps: keep the last one.
      if (stopAgreed && savedStep !== this.state.step) await save();
    } finally {
      // Steps not read when the run ended (a callback or a step threw): free their tensors.
      for (const v of this.pending) dispose([v.loss, v.gradNorm]);
      this.pending = [];
      // The captured step's memory is not kept between fit() calls (the next one captures again).
      this.graphed?.dispose();
      this.graphed = null;
      progress.stop();
      metrics?.close();
    }
    this.state.elapsed = elapsed();
    if (outDir) this.writeChart(outDir);
    const result: FitResult = {
      step: this.state.step,
      trainLoss: lastStep ? lastStep.lossValue : NaN,
      valLoss: this.state.lastValLoss,
      bestValLoss: this.state.bestValLoss,
      initialValLoss,
      valMetrics,
      elapsed: this.state.elapsed,
      throughput: runTime > 0 ? runCount / runTime : 0,
      unit: this.currentUnit ?? 'sample',
      stopped: stopAgreed,
      checkpoint,
    };
    for (const cb of this.callbacks) await cb.onFitEnd?.(this, result);
    return result;
  }

  /** Makes the schedule from options.scheduler when that is a function of the number of steps. */
  private planSchedule(steps: number): void {
    if (typeof this.opts.scheduler === 'function') this.scheduler = this.opts.scheduler(this.optimizer, steps);
  }

  private resetHistory(): void {
    this.state = { step: 0, elapsed: 0, tokens: 0, bestValLoss: null, lastValLoss: null, plannedSteps: null };
    this.trainHistory = [];
    this.valHistory = [];
  }

  /** Saves model, optimizer, schedule, data position, generator and trainer state to file. */
  saveTo(file: string, stream?: { stateDict(): unknown }, val?: BatchSource<unknown> | null): void {
    const valState = val instanceof DataLoader ? val.stateDict() : val && isSampler(val) ? (val.stateDict?.() ?? null) : null;
    saveCheckpoint(file, {
      model: this.strategy.checkpointModule(this.model),
      optimizer: this.optimizer,
      state: {
        trainer: { ...this.state },
        scheduler: this.scheduler?.stateDict() ?? null,
        data: { train: stream?.stateDict() ?? null, val: valState },
        rng: getRngState(),
        extra: this.opts.extraState?.() ?? {},
      },
    });
  }

  /**
   * Restores everything saveTo wrote. The trainer state is checked before the model is touched. A
   * schedule factory gets the steps the run was first planned for (totalSteps for older checkpoints).
   */
  private resume<B>(where: string, stream: Stream<B>, val: BatchSource<B> | null, totalSteps: number): void {
    const file = fs.existsSync(where) && fs.statSync(where).isDirectory() ? path.join(where, CHECKPOINT_FILE) : where;
    const device = this.model.parameters()[0]?.device;
    const c = readCheckpoint(file, { device });
    try {
      const bad = (what: string) => new FormatError('Trainer.resume', `${file}: ${what}`);
      const st = c.state as { trainer?: Partial<TrainerState>; scheduler?: unknown; data?: { train?: unknown; val?: unknown }; rng?: RngState };
      const t = st.trainer;
      const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
      if (!t || !Number.isSafeInteger(t.step) || t.step! < 0 || !num(t.elapsed) || !num(t.tokens)) throw bad('no valid trainer state (step, elapsed, tokens)');
      if (!(t.bestValLoss === null || num(t.bestValLoss)) || !(t.lastValLoss === null || num(t.lastValLoss))) throw bad('invalid validation losses');
      const metrics = t.lastValMetrics;
      if (metrics !== undefined && (metrics === null || typeof metrics !== 'object' || !Object.values(metrics).every(num))) throw bad('invalid validation metrics');
      if (t.plannedSteps != null && (!Number.isSafeInteger(t.plannedSteps) || t.plannedSteps < 0)) throw bad(`invalid planned steps ${JSON.stringify(t.plannedSteps)}`);
      if (!c.optimizer) throw bad('no optimizer state');
      const plannedSteps = t.plannedSteps ?? totalSteps;
      this.planSchedule(plannedSteps);
      if (!st.rng || typeof st.rng !== 'object') throw bad('no random generator state');
      if (this.scheduler && !st.scheduler) throw bad('no LR schedule state, but the trainer has a schedule');
      this.strategy.checkpointModule(this.model).loadStateDict(c.weights);
      try {
        this.optimizer.loadStateDict(c.optimizer);
        if (this.scheduler) this.scheduler.loadStateDict(st.scheduler as never);
        stream.loadStateDict(st.data?.train ?? null);
        if (val instanceof DataLoader && st.data?.val) val.loadStateDict(st.data.val as never);
        else if (val && isSampler(val) && st.data?.val != null) val.loadStateDict?.(st.data.val);
        setRngState(st.rng);
      } catch (e) {
        if (e instanceof KilnError && !(e instanceof FormatError)) throw bad(`invalid saved state: ${e.message}`);
        throw e;
      }
      this.state = {
        step: t.step!, elapsed: t.elapsed!, tokens: t.tokens!, bestValLoss: t.bestValLoss ?? null, lastValLoss: t.lastValLoss ?? null, plannedSteps,
        ...(metrics ? { lastValMetrics: metrics } : {}),
      };
    } finally {
      disposeCheckpoint(c);
    }
    this.loadHistory();
  }

  /** Reads the loss history of the run up to the resumed step back from metrics.jsonl. */
  private loadHistory(): void {
    this.trainHistory = [];
    this.valHistory = [];
    const file = this.opts.outDir ? path.join(this.opts.outDir, 'metrics.jsonl') : null;
    if (!file || !fs.existsSync(file)) return;
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      let r: Partial<MetricsRecord>;
      try {
        r = JSON.parse(line);
      } catch {
        continue;
      }
      if (typeof r.step !== 'number' || r.step > this.state.step) continue;
      if (typeof r.loss === 'number') this.trainHistory.push([r.step, r.loss]);
      if (typeof r.val_loss === 'number') this.valHistory.push([r.step, r.val_loss]);
    }
  }

  /**
   * metrics.jsonl: a fresh run starts it anew; a resumed run keeps the records up to its step (a
   * crashed run may have logged steps after its last checkpoint) and appends.
   */
  private openMetrics(outDir: string, resumed: boolean): { write(r: Partial<MetricsRecord>): void; close(): void } {
    const file = path.join(outDir, 'metrics.jsonl');
    let kept = '';
    if (resumed && fs.existsSync(file)) {
      kept = fs.readFileSync(file, 'utf8').split('\n').filter((line) => {
        try {
          const r = JSON.parse(line);
          return typeof r.step === 'number' && r.step <= this.state.step;
        } catch {
          return false;
        }
      }).map((l) => `${l}\n`).join('');
    }
    writeFileAtomic(file, kept);
    const fd = fs.openSync(file, 'a');
    return {
      write: (r) => fs.writeSync(fd, `${JSON.stringify(r)}\n`),
      close: () => fs.closeSync(fd),
    };
  }

  /** Writes loss.svg: the per-step training loss (faint), its centered moving average, and the validation loss. */
  writeChart(outDir: string): void {
    const train = this.trainHistory;
    const window = Math.max(1, Math.round(train.length / 50) | 1);
    const half = window >> 1;
    const prefix = [0];
    for (const [, l] of train) prefix.push(prefix[prefix.length - 1] + l);
    const smooth = train.map(([s], i): [number, number] => {
      const lo = Math.max(0, i - half), hi = Math.min(train.length, i + half + 1);
      return [s, (prefix[hi] - prefix[lo]) / (hi - lo)];
    });
    const last = this.valHistory[this.valHistory.length - 1];
    const lossUnit = this.currentUnit && unitLabels(this.currentUnit).loss;
    const parts = [`${this.state.step} steps`, `${formatDuration(this.state.elapsed)}`];
    if (train.length) parts.push(`final train loss ${smooth[smooth.length - 1][1].toFixed(4)}`);
    if (last) parts.push(`val loss ${last[1].toFixed(4)}`);
    const svg = lineChartSVG(
      [
        { name: 'train loss (per step)', points: train, color: '#1f77b4', width: 1, opacity: 0.35, hideInLegend: window === 1 },
        { name: window > 1 ? `train loss (mean of ${window})` : 'train loss', points: smooth, color: '#1f77b4' },
        { name: 'validation loss', points: this.valHistory, color: '#d62728', markers: true },
      ],
      { title: this.opts.title ?? 'Loss', subtitle: parts.join(' · '), xLabel: 'step', yLabel: `loss (${lossUnit ? `${lossUnit}, ` : ''}log scale)`, logY: true },
    );
    writeFileAtomic(path.join(outDir, 'loss.svg'), svg);
  }
}
