// SGD with momentum, dampening, Nesterov momentum and L2 weight decay (PyTorch's update rule),
// one fused multi-tensor native pass per group (foreach, the default) or one per parameter,
// optionally capturable (lr on the device). bfloat16 and float16 parameters keep their momentum buffer in
// float32 and are updated in float32 (only the new value is rounded).
import { ValueError } from '../errors';
import { Tensor } from '../tensor';
import { SgdStepOptions, sgdStep, sgdStepMulti } from '../ops/optim';
import { BaseOptions, ExecutionOptions, Optimizer, ParamGroup, ParamState, Params, StateSpec, checkBool, checkExecutionOptions, checkNumber } from './optimizer';

/**
 * Options of SGD (torch.optim.SGD); the constructor takes any subset. capturable keeps only the lr on
 * the device (SGD counts no steps); the first step with momentum, which creates the buffers, runs
 * outside any capture.
 */
export interface SGDOptions extends BaseOptions, ExecutionOptions {
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
   * dampening 0, weightDecay 0, nesterov false, maximize false, foreach true, capturable false).
   */
  constructor(params: Params<SGDOptions>, opts: Partial<SGDOptions> = {}) {
    super(params, {
      lr: 1e-3, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, maximize: false, foreach: true, capturable: false, ...opts,
    });
  }

  protected checkOptions(o: SGDOptions): void {
    const op = 'SGD';
    checkNumber(op, 'lr', o.lr);
    checkNumber(op, 'momentum', o.momentum);
    checkNumber(op, 'dampening', o.dampening);
    checkNumber(op, 'weightDecay', o.weightDecay);
    checkBool(op, 'nesterov', o.nesterov);
    checkBool(op, 'maximize', o.maximize);
    checkExecutionOptions(op, o);
    if (o.nesterov && (o.momentum <= 0 || o.dampening !== 0)) {
      throw new ValueError(op, `Nesterov momentum needs momentum > 0 and dampening 0, got momentum ${o.momentum} and dampening ${o.dampening}`);
    }
  }

  // The buffer appears on the first step with momentum; a parameter stepped without any has no state.
  protected override stateSpec(): StateSpec {
    return { momentumBuffer: 'tensor' };
  }

  private coefficients(g: ParamGroup<SGDOptions>, firstStep: boolean): SgdStepOptions {
    return { lr: g.lr, momentum: g.momentum, dampening: g.dampening, weightDecay: g.weightDecay, nesterov: g.nesterov, maximize: g.maximize, firstStep };
  }

  protected update(p: Tensor, grad: Tensor, g: ParamGroup<SGDOptions>, s: ParamState): void {
    if (g.momentum === 0) {
      sgdStep(p, grad, null, this.coefficients(g, false));
      return;
    }
    // The buffer joins the state only once a step succeeded, so a failed first step stays a first step.
    const old = s.momentumBuffer;
    const buf = old instanceof Tensor ? old : this.zerosState(p, 'momentumBuffer');
    try {
      sgdStep(p, grad, buf, this.coefficients(g, buf !== old));
    } catch (e) {
      if (buf !== old) buf.dispose();
      throw e;
    }
    s.momentumBuffer = buf;
  }

  // One native call per batch: the parameters of one device and dtype, and with momentum all taking
  // their first step (new buffers, which join the state once the step succeeded) or none.
  protected override updateMany(ps: Tensor[], grads: Tensor[], g: ParamGroup<SGDOptions>, states: ParamState[]): void {
    const lr = g.capturable ? this.lrTensor(g) : null;
    const has = (i: number) => states[i].momentumBuffer instanceof Tensor;
    for (const idx of this.batches(ps, g.foreach, (i) => String(g.momentum !== 0 && has(i)))) {
      const params = idx.map((i) => ps[i]), gs = idx.map((i) => grads[i]);
      if (g.momentum === 0) {
        sgdStepMulti(params, gs, [], lr, this.coefficients(g, false));
        continue;
      }
      const first = !has(idx[0]);
      const bufs = idx.map((i) => (first ? this.zerosState(ps[i], 'momentumBuffer') : (states[i].momentumBuffer as Tensor)));
      try {
        sgdStepMulti(params, gs, bufs, lr, this.coefficients(g, first));
      } catch (e) {
        if (first) for (const b of bufs) b.dispose();
        throw e;
      }
      if (first) idx.forEach((i, k) => (states[i].momentumBuffer = bufs[k]));
    }
  }
}
