// SGD with momentum, dampening, Nesterov momentum and L2 weight decay (PyTorch's update rule),
// one fused native pass per parameter. bfloat16 and float16 parameters keep their momentum buffer in
// float32 and are updated in float32 (only the new value is rounded).
import { ValueError } from '../errors';
import { Tensor } from '../tensor';
import { sgdStep } from '../ops/optim';
import { BaseOptions, Optimizer, ParamGroup, ParamState, Params, StateSpec, checkBool, checkNumber } from './optimizer';

/** Options of SGD (torch.optim.SGD); the constructor takes any subset. */
export interface SGDOptions extends BaseOptions {
  /** Momentum factor (default 0: plain SGD). */
  momentum: number;
  /** Dampening of the momentum buffer's gradient term (default 0). */
  dampening: number;
  /** L2 penalty added to the gradient: g += weightDecay * p (default 0). */
  weightDecay: number;
  /** Nesterov momentum (default false; needs momentum > 0 and dampening 0). */
  nesterov: boolean;
  /** Ascend the objective instead of descending it. */
  maximize: boolean;
}

/**
 * Stochastic gradient descent. With g = grad (+ weightDecay * p):
 * buf = momentum * buf + (1 - dampening) * g (buf = g on the first step),
 * p -= lr * (nesterov ? g + momentum * buf : buf); without momentum p -= lr * g.
 */
export class SGD extends Optimizer<SGDOptions> {
  /**
   * params: parameters or parameter groups; opts: defaults for every group (lr 1e-3, momentum 0,
   * dampening 0, weightDecay 0, nesterov false, maximize false).
   */
  constructor(params: Params<SGDOptions>, opts: Partial<SGDOptions> = {}) {
    super(params, { lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false, ...opts });
  }

  protected checkOptions(o: SGDOptions): void {
    const op = 'SGD';
    checkNumber(op, 'lr', o.lr);
    checkNumber(op, 'momentum', o.momentum);
    checkNumber(op, 'dampening', o.dampening);
    checkNumber(op, 'weightDecay', o.weightDecay);
    checkBool(op, 'nesterov', o.nesterov);
    checkBool(op, 'maximize', o.maximize);
    if (o.nesterov && (o.momentum <= 0 || o.dampening !== 0)) {
      throw new ValueError(op, `Nesterov momentum needs momentum > 0 and dampening 0, got momentum ${o.momentum} and dampening ${o.dampening}`);
    }
  }

  // The buffer appears on the first step with momentum; a parameter stepped without any has no state.
  protected override stateSpec(): StateSpec {
    return { momentumBuffer: 'tensor' };
  }

  protected update(p: Tensor, grad: Tensor, g: ParamGroup<SGDOptions>, s: ParamState): void {
    const opts = {
      lr: g.lr, momentum: g.momentum, dampening: g.dampening, weightDecay: g.weightDecay,
      nesterov: g.nesterov, maximize: g.maximize, firstStep: false,
    };
    if (g.momentum === 0) {
      sgdStep(p, grad, null, opts);
      return;
    }
    // The buffer joins the state only once a step succeeded, so a failed first step stays a first step.
    const old = s.momentumBuffer;
    const buf = old instanceof Tensor ? old : this.zerosState(p, 'momentumBuffer');
    opts.firstStep = buf !== old;
    try {
      sgdStep(p, grad, buf, opts);
    } catch (e) {
      if (buf !== old) buf.dispose();
      throw e;
    }
    s.momentumBuffer = buf;
  }
}
