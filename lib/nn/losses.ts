// Loss functions (mseLoss, crossEntropy, nllLoss, bceLoss, bceWithLogits) and their module forms.
// Each takes reduction 'mean' (default), 'sum' or 'none' (per-element losses), like torch.nn.functional.
// Class inputs follow PyTorch's layout: [N, C] or [N, C, d1, ...] with targets [N] or [N, d1, ...].
import { isFloating } from '../dtype';
import { DTypeError, ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { zerosLike } from '../ops/creation';
import { where } from '../ops/elementwise';
import { stack } from '../ops/shape';
import { crossEntropy as fusedCrossEntropy } from '../ops/softmax';
import { sameShape, shapeStr } from '../shape';
import type { Tensor } from '../tensor';
import { Module } from './module';

/**
 * How a loss combines its per-element values: 'mean' (default), 'sum', or 'none' (the unreduced
 * losses).
 */
export type Reduction = 'mean' | 'sum' | 'none';

function checkReduction(op: string, reduction: Reduction = 'mean'): Reduction {
  if (reduction !== 'mean' && reduction !== 'sum' && reduction !== 'none') {
    throw new ValueError(op, `reduction must be 'mean', 'sum' or 'none', got '${reduction}'`);
  }
  return reduction;
}

function reduce(op: string, loss: Tensor, reduction?: Reduction): Tensor {
  const r = checkReduction(op, reduction);
  return r === 'mean' ? loss.mean() : r === 'sum' ? loss.sum() : loss;
}

function checkSameShape(op: string, input: Tensor, target: Tensor): void {
  if (!sameShape(input.shape, target.shape)) {
    throw new ShapeError(op, `input ${shapeStr(input.shape)} and target ${shapeStr(target.shape)} must have the same shape`);
  }
}

/** Mean squared error. */
export function mseLoss(input: Tensor, target: Tensor, opts: { reduction?: Reduction } = {}): Tensor {
  checkSameShape('mseLoss', input, target);
  return tidy(() => reduce('mseLoss', input.sub(target).square(), opts.reduction));
}

/** Checks that target [N, d...] indexes classes of input [N, C, d...] (or [] for [C]); returns the class dim. */
function classDim(op: string, input: Tensor, target: Tensor): number {
  const cdim = input.ndim === 1 ? 0 : 1;
  const rows = input.shape.filter((_, i) => i !== cdim);
  if (input.ndim === 0 || !sameShape(target.shape, rows)) {
    throw new ShapeError(op, `input ${shapeStr(input.shape)} and target ${shapeStr(target.shape)} do not fit: expected [N, C, d...] and [N, d...] (or [C] and [])`);
  }
  return cdim;
}

/** Options of nn.crossEntropy and CrossEntropyLoss. */
export interface CrossEntropyOptions {
  /** Targets equal to this are skipped and excluded from the mean (default -100). */
  ignoreIndex?: number;
  /** Mixes the one-hot target with the uniform distribution: (1 - s) * onehot + s / C. */
  labelSmoothing?: number;
  /** 'mean' (default; over the non-ignored targets), 'sum' or 'none' (a loss per target). */
  reduction?: Reduction;
}

/**
 * Cross-entropy of raw scores [N, C, d...] against class indices [N, d...] (the fused
 * kiln.crossEntropy), or against class probabilities when target is a floating point tensor of
 * input's shape.
 */
export function crossEntropy(input: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const op = 'crossEntropy';
  const smoothing = opts.labelSmoothing ?? 0;
  if (!(smoothing >= 0 && smoothing <= 1)) throw new ValueError(op, `labelSmoothing must be in [0, 1], got ${smoothing}`);
  return tidy(() => {
    if (isFloating(target.dtype)) {
      checkSameShape(op, input, target);
      const dim = input.ndim === 1 ? 0 : 1;
      const C = input.shape[dim];
      const t = smoothing ? target.mul(1 - smoothing).add(smoothing / C) : target;
      return reduce(op, input.logSoftmax(dim).mul(t).sum(dim).neg(), opts.reduction);
    }
    return fusedCrossEntropy(input, target, { ignoreIndex: opts.ignoreIndex, labelSmoothing: smoothing, reduction: checkReduction(op, opts.reduction) });
  });
}

/** Options of nllLoss and NLLLoss. */
export interface NLLLossOptions {
  /** Per-class weights [C]; the mean divides by the summed weights of the counted targets. */
  weight?: Tensor | null;
  /** Targets equal to this are skipped and excluded from the mean (default -100). */
  ignoreIndex?: number;
  /** 'mean' (default; weighted mean over the counted targets), 'sum' or 'none'. */
  reduction?: Reduction;
}

/** Negative log-likelihood of log-probabilities [N, C, d...] at class targets [N, d...]. */
export function nllLoss(input: Tensor, target: Tensor, opts: NLLLossOptions = {}): Tensor {
  const op = 'nllLoss';
  if (isFloating(target.dtype)) throw new DTypeError(op, `target must hold class indices (an integer dtype), got ${target.dtype}`);
  return tidy(() => {
    const cdim = classDim(op, input, target);
    const C = input.shape[cdim];
    const valid = target.ne(opts.ignoreIndex ?? -100);
    const safe = where(valid, target, 0);
    let w = valid.to(input.dtype);
    if (opts.weight) {
      if (opts.weight.ndim !== 1 || opts.weight.shape[0] !== C) {
        throw new ShapeError(op, `weight must be [${C}] (one per class), got ${shapeStr(opts.weight.shape)}`);
      }
      w = w.mul(opts.weight.indexSelect(0, safe.reshape(-1)).reshape(target.shape));
    }
    const loss = input.gather(cdim, safe.unsqueeze(cdim)).squeeze(cdim).neg().mul(w);
    const reduction = checkReduction(op, opts.reduction);
    if (reduction === 'none') return loss;
    return reduction === 'sum' ? loss.sum() : loss.sum().div(w.sum());
  });
}

/** Options of bceLoss and BCELoss. */
export interface BCELossOptions {
  /** Per-element weights, broadcast to the input. */
  weight?: Tensor | null;
  /** 'mean' (default), 'sum' or 'none'. */
  reduction?: Reduction;
}

/** Options of bceWithLogits and BCEWithLogitsLoss. */
export interface BCEWithLogitsOptions extends BCELossOptions {
  /** Weight of the positive term per class (e.g. negatives / positives), broadcast to the input. */
  posWeight?: Tensor | null;
}

/** Binary cross-entropy of probabilities in [0, 1]; logs are clamped at -100 like PyTorch. */
export function bceLoss(input: Tensor, target: Tensor, opts: BCELossOptions = {}): Tensor {
  checkSameShape('bceLoss', input, target);
  return tidy(() => {
    const logP = input.log().clamp(-100);
    const log1mP = input.neg().add(1).log().clamp(-100);
    let loss = target.mul(logP.sub(log1mP)).add(log1mP).neg();
    if (opts.weight) loss = loss.mul(opts.weight);
    return reduce('bceLoss', loss, opts.reduction);
  });
}

/** log(1 + e^z) as logsumexp(0, z): stable for any z, and its gradient is sigmoid(z) everywhere. */
function softplus(z: Tensor): Tensor {
  return stack([zerosLike(z), z], -1).logsumexp(-1);
}

/**
 * Binary cross-entropy on logits, stable for any |x|: softplus(x) - x*y, which equals
 * max(x, 0) - x*y + log(1 + exp(-|x|)); the softplus is computed as logsumexp(0, x) so that the
 * gradient at x = 0 is exact (sigmoid(x) - y), where the max/abs form has kinks.
 * posWeight [C] weighs positive targets: (1 - y) x + (1 + (posWeight - 1) y) softplus(-x).
 */
export function bceWithLogits(
  input: Tensor,
  target: Tensor,
  opts: BCEWithLogitsOptions = {},
): Tensor {
  checkSameShape('bceWithLogits', input, target);
  return tidy(() => {
    let loss = opts.posWeight
      ? target.neg().add(1).mul(input).add(opts.posWeight.sub(1).mul(target).add(1).mul(softplus(input.neg())))
      : softplus(input).sub(input.mul(target));
    if (opts.weight) loss = loss.mul(opts.weight);
    return reduce('bceWithLogits', loss, opts.reduction);
  });
}

/** Module form of mseLoss. */
export class MSELoss extends Module {
  constructor(
    /** How the per-element losses are combined (default 'mean'). */
    readonly reduction: Reduction = 'mean',
  ) {
    super();
  }
  override forward(input: Tensor, target: Tensor): Tensor {
    return mseLoss(input, target, { reduction: this.reduction });
  }
}

/** Module form of crossEntropy. */
export class CrossEntropyLoss extends Module {
  constructor(
    /** ignoreIndex, labelSmoothing and reduction, as crossEntropy takes them. */
    readonly options: CrossEntropyOptions = {},
  ) {
    super();
  }
  override forward(input: Tensor, target: Tensor): Tensor {
    return crossEntropy(input, target, this.options);
  }
}

/** Module form of nllLoss; the class weights become a buffer (the module owns them). */
export class NLLLoss extends Module {
  /** Per-class weights [C] (a buffer), or null. */
  readonly weight: Tensor | null;
  constructor(
    /** As nllLoss takes them; weight moves into the weight buffer. */
    readonly options: NLLLossOptions = {},
  ) {
    super();
    this.weight = this.registerBuffer('weight', options.weight ?? null);
  }
  override forward(input: Tensor, target: Tensor): Tensor {
    return nllLoss(input, target, { ...this.options, weight: this.weight });
  }
}

/** Module form of bceLoss; the weights become a buffer (the module owns them). */
export class BCELoss extends Module {
  /** Per-element weights broadcast to the input (a buffer), or null. */
  readonly weight: Tensor | null;
  constructor(
    /** As bceLoss takes them; weight moves into the weight buffer. */
    readonly options: BCELossOptions = {},
  ) {
    super();
    this.weight = this.registerBuffer('weight', options.weight ?? null);
  }
  override forward(input: Tensor, target: Tensor): Tensor {
    return bceLoss(input, target, { reduction: this.options.reduction, weight: this.weight });
  }
}

/** Module form of bceWithLogits; weight and posWeight become buffers (the module owns them). */
export class BCEWithLogitsLoss extends Module {
  /** Per-element weights broadcast to the input (a buffer), or null. */
  readonly weight: Tensor | null;
  /** Weights of the positive term per class, broadcast to the input (a buffer), or null. */
  readonly posWeight: Tensor | null;
  constructor(
    /** As bceWithLogits takes them; weight and posWeight move into buffers. */
    readonly options: BCEWithLogitsOptions = {},
  ) {
    super();
    this.weight = this.registerBuffer('weight', options.weight ?? null);
    this.posWeight = this.registerBuffer('posWeight', options.posWeight ?? null);
  }
  override forward(input: Tensor, target: Tensor): Tensor {
    return bceWithLogits(input, target, { reduction: this.options.reduction, weight: this.weight, posWeight: this.posWeight });
  }
}
