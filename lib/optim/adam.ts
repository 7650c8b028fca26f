// Adam (L2 weight decay added to the gradient, optional AMSGrad) and AdamW (decoupled weight decay),
// with PyTorch's update rule; one fused multi-tensor native pass per group (foreach, the default) or
// one per parameter, optionally capturable (lr and step counts on the device). bfloat16 and float16
// parameters keep their moments in float32 and are updated in float32 (only the new value is rounded).
import { ValueError } from '../errors';
import type { Tensor } from '../tensor';
import { AdamStepOptions, adamStep, adamStepMulti } from '../ops/optim';
import { BaseOptions, ExecutionOptions, Optimizer, ParamGroup, ParamState, Params, StateSpec, checkBool, checkExecutionOptions, checkNumber } from './optimizer';

/** Options of Adam and AdamW (torch.optim.Adam / AdamW); the constructors take any subset. */
export interface AdamOptions extends BaseOptions, ExecutionOptions {
  /** Decay rates of the first and second moment estimates (default [0.9, 0.999]). */
  betas: [number, number];
  /** Added to the denominator for stability (default 1e-8). */
  eps: number;
  /**
   * Adam: L2 penalty added to the gradient (default 0). AdamW: decoupled decay p *= 1 - lr *
   * weightDecay (default 0.01).
   */
  weightDecay: number;
  /** Use the running maximum of the second moment (Reddi et al., "On the Convergence of Adam and Beyond"). */
  amsgrad: boolean;
  /** Ascend the objective instead of descending it. */
  maximize: boolean;
}

/**
 * Adam. At step t with g = grad (+ weightDecay * p for Adam):
 * m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 * p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 */
export class Adam extends Optimizer<AdamOptions> {
  /** AdamW: weight decay multiplies p by (1 - lr * weightDecay) instead of entering the gradient. */
  protected readonly decoupled: boolean = false;

  /**
   * params: parameters or parameter groups; opts: defaults for every group (lr 1e-3, betas [0.9,
   * 0.999], eps 1e-8, weightDecay 0, amsgrad false, maximize false, foreach true, capturable false).
   */
  constructor(params: Params<AdamOptions>, opts: Partial<AdamOptions> = {}) {
    super(params, {
      lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, amsgrad: false, maximize: false, foreach: true, capturable: false, ...opts,
    });
  }

  protected checkOptions(o: AdamOptions): void {
    const op = this.constructor.name;
    checkNumber(op, 'lr', o.lr);
    checkNumber(op, 'eps', o.eps);
    checkNumber(op, 'weightDecay', o.weightDecay);
    checkBool(op, 'amsgrad', o.amsgrad);
    checkBool(op, 'maximize', o.maximize);
    checkExecutionOptions(op, o);
    if (!Array.isArray(o.betas) || o.betas.length !== 2 || !o.betas.every((b) => typeof b === 'number' && b >= 0 && b < 1)) {
      throw new ValueError(op, `betas must be two numbers in [0, 1), got ${JSON.stringify(o.betas)}`);
    }
  }

  protected override stateSpec(g: ParamGroup<AdamOptions>): StateSpec {
    return { step: 'step', expAvg: 'tensor', expAvgSq: 'tensor', ...(g.amsgrad ? { maxExpAvgSq: 'tensor' as const } : {}) };
  }

  /** The state of p's first step, or its step count converted to how g keeps it. */
  private initState(p: Tensor, g: ParamGroup<AdamOptions>, s: ParamState): void {
    if (s.step === undefined) Object.assign(s, { step: this.stepCount(p, g, 0), expAvg: this.zerosState(p, 'expAvg'), expAvgSq: this.zerosState(p, 'expAvgSq') });
    else s.step = this.stepCount(p, g, s.step);
    if (g.amsgrad && !s.maxExpAvgSq) s.maxExpAvgSq = this.zerosState(p, 'maxExpAvgSq');
  }

  /** The coefficients of step `step` (counted from 1), the bias corrections in float64. */
  private coefficients(g: ParamGroup<AdamOptions>, step: number): AdamStepOptions {
    const [beta1, beta2] = g.betas;
    return {
      lr: g.lr, beta1, beta2, eps: g.eps, weightDecay: g.weightDecay,
      biasCorrection1: 1 - beta1 ** step, biasCorrection2Sqrt: Math.sqrt(1 - beta2 ** step),
      decoupled: this.decoupled, maximize: g.maximize,
    };
  }

  protected update(p: Tensor, grad: Tensor, g: ParamGroup<AdamOptions>, s: ParamState): void {
    this.initState(p, g, s);
    const m = this.stateTensor(s, 'expAvg', p), v = this.stateTensor(s, 'expAvgSq', p);
    const vmax = g.amsgrad ? this.stateTensor(s, 'maxExpAvgSq', p) : null;
    const step = (s.step as number) + 1;
    adamStep(p, grad, m, v, vmax, this.coefficients(g, step));
    s.step = step;
  }

  // One native call per batch: the parameters of one device and dtype (and, on the host path, one
  // step count, which fixes the bias corrections); capturable batches read lr and steps on the device.
  protected override updateMany(ps: Tensor[], grads: Tensor[], g: ParamGroup<AdamOptions>, states: ParamState[]): void {
    ps.forEach((p, i) => this.initState(p, g, states[i]));
    const lr = g.capturable ? this.lrTensor(g) : null;
    for (const idx of this.batches(ps, g.foreach, (i) => (lr ? '' : String(states[i].step)))) {
      const state = (key: string) => idx.map((i) => this.stateTensor(states[i], key, ps[i]));
      const operands = [idx.map((i) => ps[i]), idx.map((i) => grads[i]), state('expAvg'), state('expAvgSq'), g.amsgrad ? state('maxExpAvgSq') : []] as const;
      if (lr) {
        adamStepMulti(...operands, { lr, steps: idx.map((i) => states[i].step as Tensor) }, this.coefficients(g, 1));
      } else {
        const step = (states[idx[0]].step as number) + 1;
        adamStepMulti(...operands, null, this.coefficients(g, step));
        for (const i of idx) states[i].step = step;
      }
    }
  }
}

/** AdamW (Loshchilov and Hutter): Adam with decoupled weight decay, default weightDecay 0.01. */
export class AdamW extends Adam {
  protected override readonly decoupled: boolean = true;

  /** As Adam, with weightDecay 0.01 by default (like torch.optim.AdamW). */
  constructor(params: Params<AdamOptions>, opts: Partial<AdamOptions> = {}) {
    super(params, { weightDecay: 1e-2, ...opts });
  }
}
