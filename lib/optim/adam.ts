// Adam (L2 weight decay added to the gradient, optional AMSGrad) and AdamW (decoupled weight decay),
// with PyTorch's update rule; one fused native pass per parameter. bfloat16 and float16 parameters
// keep their moments in float32 and are updated in float32 (only the new value is rounded).
import { ValueError } from '../errors';
import type { Tensor } from '../tensor';
import { adamStep } from '../ops/optim';
import { BaseOptions, Optimizer, ParamGroup, ParamState, Params, StateSpec, checkBool, checkNumber } from './optimizer';

/** Options of Adam and AdamW (torch.optim.Adam / AdamW); the constructors take any subset. */
export interface AdamOptions extends BaseOptions {
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
   * 0.999], eps 1e-8, weightDecay 0, amsgrad false, maximize false).
   */
  constructor(params: Params<AdamOptions>, opts: Partial<AdamOptions> = {}) {
    super(params, { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, amsgrad: false, maximize: false, ...opts });
  }

  protected checkOptions(o: AdamOptions): void {
    const op = this.constructor.name;
    checkNumber(op, 'lr', o.lr);
    checkNumber(op, 'eps', o.eps);
    checkNumber(op, 'weightDecay', o.weightDecay);
    checkBool(op, 'amsgrad', o.amsgrad);
    checkBool(op, 'maximize', o.maximize);
    if (!Array.isArray(o.betas) || o.betas.length !== 2 || !o.betas.every((b) => typeof b === 'number' && b >= 0 && b < 1)) {
      throw new ValueError(op, `betas must be two numbers in [0, 1), got ${JSON.stringify(o.betas)}`);
    }
  }

  protected override stateSpec(g: ParamGroup<AdamOptions>): StateSpec {
    return { step: 'step', expAvg: 'tensor', expAvgSq: 'tensor', ...(g.amsgrad ? { maxExpAvgSq: 'tensor' as const } : {}) };
  }

  protected update(p: Tensor, grad: Tensor, g: ParamGroup<AdamOptions>, s: ParamState): void {
    if (s.step === undefined) Object.assign(s, { step: 0, expAvg: this.zerosState(p, 'expAvg'), expAvgSq: this.zerosState(p, 'expAvgSq') });
    if (g.amsgrad && !s.maxExpAvgSq) s.maxExpAvgSq = this.zerosState(p, 'maxExpAvgSq');
    const m = this.stateTensor(s, 'expAvg', p), v = this.stateTensor(s, 'expAvgSq', p);
    const vmax = g.amsgrad ? this.stateTensor(s, 'maxExpAvgSq', p) : null;
    const step = (s.step as number) + 1;
    const [beta1, beta2] = g.betas;
    adamStep(p, grad, m, v, vmax, {
      lr: g.lr, beta1, beta2, eps: g.eps, weightDecay: g.weightDecay,
      biasCorrection1: 1 - beta1 ** step, biasCorrection2Sqrt: Math.sqrt(1 - beta2 ** step),
      decoupled: this.decoupled, maximize: g.maximize,
    });
    s.step = step;
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
