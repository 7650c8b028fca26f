// Learning-rate schedules. Each one is a closed form lr(step) of the group's initial lr, so that
// stepping, jumping (loadStateDict) and nesting (SequentialLR) all give the same values: LambdaLR,
// StepLR, MultiStepLR, ExponentialLR, LinearLR, LinearWarmupLR, CosineAnnealingLR, WarmupCosineLR
// and SequentialLR. Every one takes the optimizer and an options object (lastEpoch included).
import { ValueError } from '../errors';
import type { BaseOptions, Optimizer } from './optimizer';

/** The learning rate at step `step` for a group whose initial lr is baseLr. */
export type Schedule = (step: number, baseLr: number, group: number) => number;

/** What a scheduler saves for checkpoints (like torch's scheduler.state_dict()). */
export interface LRSchedulerStateDict {
  /** The step the current lrs belong to. */
  lastEpoch: number;
  /** The initial lr of each group. */
  baseLrs: number[];
}

/** What every scheduler's options hold. */
export interface SchedulerOptions {
  /** The step the schedule resumes after (default -1: a fresh schedule). Prefer loadStateDict() to resume. */
  lastEpoch?: number;
}

/**
 * Base class: sets every group's lr to schedule(step, initialLr, group). Constructing a scheduler
 * applies step lastEpoch + 1, i.e. step 0 by default (so the first optimizer.step() runs with lr(0));
 * call step() after each optimizer.step(). The first scheduler on an optimizer records each group's
 * `initialLr`. To resume, prefer loadStateDict() over passing lastEpoch.
 */
export class LRScheduler {
  /** The optimizer whose groups' lr this scheduler sets. */
  readonly optimizer: Optimizer<BaseOptions>;
  /** The initial lr of each group, which the schedule scales. */
  baseLrs: number[];
  /** The step the current lrs belong to (-1 before the first). */
  lastEpoch: number;
  private readonly schedule: Schedule;
  private lastLrs: number[] = [];

  constructor(optimizer: Optimizer<BaseOptions>, schedule: Schedule, opts: SchedulerOptions = {}) {
    const op = new.target.name;
    const lastEpoch = options(op, opts, '{ lastEpoch: 99 }').lastEpoch ?? -1;
    if (!Number.isInteger(lastEpoch) || lastEpoch < -1) throw new ValueError(op, `lastEpoch must be an integer >= -1, got ${lastEpoch}`);
    for (const [i, g] of optimizer.paramGroups.entries()) {
      if (g.initialLr === undefined) {
        if (lastEpoch !== -1) throw new ValueError(op, `group ${i} has no initialLr to resume a schedule at step ${lastEpoch} from`);
        g.initialLr = g.lr;
      }
    }
    this.optimizer = optimizer;
    this.schedule = schedule;
    this.baseLrs = optimizer.paramGroups.map((g) => g.initialLr!);
    this.lastEpoch = lastEpoch;
    this.step();
  }

  /** The lr of group `group` (initial lr baseLr) at `step`, without changing anything. */
  lrAt(step: number, baseLr: number, group = 0): number {
    return this.schedule(step, baseLr, group);
  }

  /** Advances one step and sets each group's lr. */
  step(): void {
    this.lastEpoch += 1;
    this.apply();
  }

  private apply(): void {
    this.lastLrs = this.optimizer.paramGroups.map((g, i) => {
      g.lr = this.schedule(this.lastEpoch, this.baseLrs[i], i);
      return g.lr;
    });
  }

  /** The lrs the last step set, one per group. */
  getLastLr(): number[] {
    return [...this.lastLrs];
  }

  /**
   * The step and base lrs, for checkpoints; loadStateDict() restores them (the schedule itself comes
   * from the constructor).
   */
  stateDict(): LRSchedulerStateDict {
    return { lastEpoch: this.lastEpoch, baseLrs: [...this.baseLrs] };
  }

  /** Restores the step count and initial lrs, and sets the groups' lrs for that step. */
  loadStateDict(sd: LRSchedulerStateDict): void {
    const op = `${this.constructor.name}.loadStateDict`;
    if (!sd || !Number.isInteger(sd.lastEpoch) || sd.lastEpoch < -1) throw new ValueError(op, `lastEpoch must be an integer >= -1, got ${sd?.lastEpoch}`);
    if (!Array.isArray(sd.baseLrs) || sd.baseLrs.length !== this.optimizer.paramGroups.length || !sd.baseLrs.every(Number.isFinite)) {
      throw new ValueError(op, `baseLrs must hold one finite number per parameter group (${this.optimizer.paramGroups.length})`);
    }
    this.lastEpoch = sd.lastEpoch;
    this.baseLrs = [...sd.baseLrs];
    this.apply();
  }
}

function checkInt(op: string, name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new ValueError(op, `${name} must be an integer >= ${min}, got ${String(v)}`);
  return v;
}

function checkNum(op: string, name: string, v: unknown, lo: number, hi = Infinity): number {
  if (typeof v !== 'number' || !(v >= lo && v <= hi)) throw new ValueError(op, `${name} must be a number in [${lo}, ${hi}], got ${String(v)}`);
  return v;
}

/**
 * opts itself, checked to be an options object: the schedulers took positional arguments before, so a
 * number here is most likely an old call.
 */
function options<T extends object>(op: string, opts: T, example: string): T {
  if (opts === null || typeof opts !== 'object' || Array.isArray(opts)) {
    throw new ValueError(op, `expected an options object like ${example} after the optimizer, got ${Array.isArray(opts) ? 'an array' : String(opts)}`);
  }
  return opts;
}

export interface LambdaLROptions extends SchedulerOptions {
  /** The factor of step, for all groups or one function per group. */
  lrLambda: ((step: number) => number) | Array<(step: number) => number>;
}

/** lr = initialLr * lrLambda(step), with one lambda for all groups or one per group. */
export class LambdaLR extends LRScheduler {
  constructor(optimizer: Optimizer<BaseOptions>, opts: LambdaLROptions) {
    const { lrLambda } = options('LambdaLR', opts, '{ lrLambda: (step) => 0.95 ** step }');
    const n = optimizer.paramGroups.length;
    const fns = Array.isArray(lrLambda) ? lrLambda : new Array(n).fill(lrLambda);
    if (fns.length !== n || !fns.every((f) => typeof f === 'function')) {
      throw new ValueError('LambdaLR', `lrLambda must be one function or ${n} functions (one per group)`);
    }
    super(optimizer, (step, base, group) => base * fns[group](step), opts);
  }
}

export interface StepLROptions extends SchedulerOptions {
  /** Steps between decays. */
  stepSize: number;
  /** Factor of each decay (default 0.1). */
  gamma?: number;
}

/** lr = initialLr * gamma^floor(step / stepSize). */
export class StepLR extends LRScheduler {
  constructor(optimizer: Optimizer<BaseOptions>, opts: StepLROptions) {
    const op = 'StepLR';
    const stepSize = checkInt(op, 'stepSize', options(op, opts, '{ stepSize: 30, gamma: 0.1 }').stepSize, 1);
    const gamma = checkNum(op, 'gamma', opts.gamma ?? 0.1, 0);
    super(optimizer, (step, base) => base * gamma ** Math.floor(step / stepSize), opts);
  }
}

export interface MultiStepLROptions extends SchedulerOptions {
  /** Steps at which the lr is multiplied by gamma. */
  milestones: readonly number[];
  /** Factor of each decay (default 0.1). */
  gamma?: number;
}

/** lr = initialLr * gamma^(number of milestones <= step). */
export class MultiStepLR extends LRScheduler {
  constructor(optimizer: Optimizer<BaseOptions>, opts: MultiStepLROptions) {
    const op = 'MultiStepLR';
    const { milestones } = options(op, opts, '{ milestones: [30, 80], gamma: 0.1 }');
    if (!Array.isArray(milestones)) throw new ValueError(op, `milestones must be an array of steps, got ${String(milestones)}`);
    milestones.forEach((m, i) => checkInt(op, `milestones[${i}]`, m, 0));
    const gamma = checkNum(op, 'gamma', opts.gamma ?? 0.1, 0);
    const ms = [...milestones];
    super(optimizer, (step, base) => base * gamma ** ms.filter((m) => m <= step).length, opts);
  }
}

export interface ExponentialLROptions extends SchedulerOptions {
  /** Factor per step. */
  gamma: number;
}

/** lr = initialLr * gamma^step. */
export class ExponentialLR extends LRScheduler {
  constructor(optimizer: Optimizer<BaseOptions>, opts: ExponentialLROptions) {
    const gamma = checkNum('ExponentialLR', 'gamma', options('ExponentialLR', opts, '{ gamma: 0.95 }').gamma, 0);
    super(optimizer, (step, base) => base * gamma ** step, opts);
  }
}

export interface LinearLROptions extends SchedulerOptions {
  /** Factor at step 0 (default 1/3). */
  startFactor?: number;
  /** Factor from step totalIters on (default 1). */
  endFactor?: number;
  /** Steps to go from startFactor to endFactor (default 5). */
  totalIters?: number;
}

/** lr = initialLr * (startFactor + (endFactor - startFactor) * min(step, totalIters) / totalIters). */
export class LinearLR extends LRScheduler {
  constructor(optimizer: Optimizer<BaseOptions>, opts: LinearLROptions = {}) {
    options('LinearLR', opts, '{ startFactor: 0.1, totalIters: 100 }');
    const start = opts.startFactor ?? 1 / 3, end = opts.endFactor ?? 1, total = opts.totalIters ?? 5;
    if (!(start > 0 && start <= 1)) throw new ValueError('LinearLR', `startFactor must be in (0, 1], got ${start}`);
    checkNum('LinearLR', 'endFactor', end, 0, 1);
    checkInt('LinearLR', 'totalIters', total, 0);
    super(optimizer, (step, base) => base * (total === 0 ? end : start + ((end - start) * Math.min(step, total)) / total), opts);
  }
}

export interface LinearWarmupOptions extends SchedulerOptions {
  /** Steps of linear warmup. */
  warmupSteps: number;
}

/**
 * Linear warmup: lr = initialLr * (step + 1) / warmupSteps for the first warmupSteps steps, then
 * initialLr. The first step already trains (lr = initialLr / warmupSteps, not 0).
 */
export class LinearWarmupLR extends LRScheduler {
  constructor(optimizer: Optimizer<BaseOptions>, opts: LinearWarmupOptions) {
    const op = 'LinearWarmupLR';
    const warmupSteps = checkInt(op, 'warmupSteps', options(op, opts, '{ warmupSteps: 100 }').warmupSteps, 0);
    super(optimizer, (step, base) => base * warmupFactor(step, warmupSteps), opts);
  }
}

/** The factor of linear warmup at step: (step + 1) / warmupSteps during warmup, then 1. */
function warmupFactor(step: number, warmupSteps: number): number {
  return step < warmupSteps ? (step + 1) / warmupSteps : 1;
}

export interface CosineAnnealingOptions extends SchedulerOptions {
  /** Steps of the half cosine from the initial lr down to etaMin (PyTorch's T_max). */
  tMax: number;
  /** The minimum lr, absolute (default 0). */
  etaMin?: number;
}

/** lr = etaMin + (initialLr - etaMin) * (1 + cos(pi * step / tMax)) / 2 (PyTorch's closed form). */
export class CosineAnnealingLR extends LRScheduler {
  constructor(optimizer: Optimizer<BaseOptions>, opts: CosineAnnealingOptions) {
    const op = 'CosineAnnealingLR';
    const tMax = checkInt(op, 'tMax', options(op, opts, '{ tMax: 1000, etaMin: 1e-5 }').tMax, 1);
    const etaMin = checkNum(op, 'etaMin', opts.etaMin ?? 0, 0);
    super(optimizer, (step, base) => etaMin + ((base - etaMin) * (1 + Math.cos((Math.PI * step) / tMax))) / 2, opts);
  }
}

export interface WarmupCosineOptions extends SchedulerOptions {
  /** Steps of linear warmup (lr = initialLr * (step + 1) / warmupSteps). */
  warmupSteps: number;
  /** The step at which the cosine reaches the minimum; the lr stays there afterwards. */
  totalSteps: number;
  /** The minimum lr, absolute (default 0). */
  minLr?: number;
  /** The minimum lr as a fraction of each group's initial lr (instead of minLr). */
  minLrRatio?: number;
}

/**
 * The usual schedule for Transformer training: linear warmup for warmupSteps, then a half cosine from
 * the initial lr down to the minimum at totalSteps, then the minimum.
 */
export class WarmupCosineLR extends LRScheduler {
  constructor(optimizer: Optimizer<BaseOptions>, opts: WarmupCosineOptions) {
    const op = 'WarmupCosineLR';
    const warmup = checkInt(op, 'warmupSteps', options(op, opts, '{ warmupSteps: 100, totalSteps: 5000 }').warmupSteps, 0);
    const total = checkInt(op, 'totalSteps', opts.totalSteps, warmup);
    if (opts.minLr !== undefined && opts.minLrRatio !== undefined) throw new ValueError(op, 'give minLr or minLrRatio, not both');
    const minLr = checkNum(op, 'minLr', opts.minLr ?? 0, 0);
    const ratio = opts.minLrRatio === undefined ? undefined : checkNum(op, 'minLrRatio', opts.minLrRatio, 0, 1);
    super(optimizer, (step, base) => {
      if (step < warmup) return base * warmupFactor(step, warmup);
      const floor = ratio === undefined ? minLr : base * ratio;
      if (step >= total) return floor;
      return floor + ((base - floor) * (1 + Math.cos((Math.PI * (step - warmup)) / (total - warmup)))) / 2;
    }, opts);
  }
}

export interface SequentialLROptions extends SchedulerOptions {
  /** The schedulers, built on the same optimizer. */
  schedulers: readonly LRScheduler[];
  /** The steps at which the next scheduler takes over (one fewer than schedulers). */
  milestones: readonly number[];
}

/**
 * Runs schedulers one after another: schedulers[k] takes over at milestones[k - 1] and counts its own
 * steps from 0 there. The schedulers must be built on the same optimizer.
 */
export class SequentialLR extends LRScheduler {
  constructor(optimizer: Optimizer<BaseOptions>, opts: SequentialLROptions) {
    const op = 'SequentialLR';
    const { schedulers, milestones } = options(op, opts, '{ schedulers: [warmup, cosine], milestones: [100] }');
    if (!Array.isArray(schedulers) || schedulers.length === 0) throw new ValueError(op, 'needs at least one scheduler');
    if (!Array.isArray(milestones) || milestones.length !== schedulers.length - 1) {
      throw new ValueError(op, `needs ${schedulers.length - 1} milestones for ${schedulers.length} schedulers, got ${Array.isArray(milestones) ? milestones.length : String(milestones)}`);
    }
    milestones.forEach((m, i) => {
      checkInt(op, `milestones[${i}]`, m, 1);
      if (i > 0 && m <= milestones[i - 1]) throw new ValueError(op, `milestones must increase, got ${milestones.join(', ')}`);
    });
    for (const s of schedulers) if (s.optimizer !== optimizer) throw new ValueError(op, 'every scheduler must belong to the given optimizer');
    const ms = [...milestones], subs = [...schedulers];
    super(optimizer, (step, base, group) => {
      let k = 0;
      while (k < ms.length && step >= ms[k]) k++;
      return subs[k].lrAt(k === 0 ? step : step - ms[k - 1], base, group);
    }, opts);
  }
}
