// Weight initialization (torch.nn.init): in-place fills drawn from kiln's seeded generator, so a
// model's initial weights repeat after kiln.manualSeed(seed). Each function returns its tensor.
import { noGrad } from '../autograd/grad_mode';
import { ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { normal, uniform } from '../ops/random';
import { shapeStr } from '../shape';
import type { Tensor } from '../tensor';

/** Writes src(shape) into t without recording autograd (t may be a parameter). */
function fillFrom(t: Tensor, src: (opts: { dtype: 'float32' | 'float64'; device: string }) => Tensor): Tensor {
  const dtype = t.dtype === 'float64' ? 'float64' : 'float32';
  noGrad(() => tidy(() => void t.copy_(src({ dtype, device: t.device }))));
  return t;
}

/** Fills t with values drawn uniformly from [a, b). */
export function uniform_(t: Tensor, a = 0, b = 1): Tensor {
  return fillFrom(t, (o) => uniform(t.shape, a, b, o));
}

/** Fills t with values drawn from N(mean, std^2). */
export function normal_(t: Tensor, mean = 0, std = 1): Tensor {
  return fillFrom(t, (o) => normal(t.shape, mean, std, o));
}

/** Fills t with value, in place and unrecorded by autograd (t may be a parameter); returns t. */
export function constant_(t: Tensor, value: number): Tensor {
  noGrad(() => t.fill_(value));
  return t;
}
/** Fills t with zeros (see constant_); returns t. */
export function zeros_(t: Tensor): Tensor {
  return constant_(t, 0);
}
/** Fills t with ones (see constant_); returns t. */
export function ones_(t: Tensor): Tensor {
  return constant_(t, 1);
}

/** The activations calculateGain knows (the names torch.nn.init uses). */
export type Nonlinearity = 'linear' | 'identity' | 'sigmoid' | 'tanh' | 'relu' | 'leaky_relu' | 'selu' | 'gelu' | 'silu';

/** The recommended gain for a nonlinearity (torch.nn.init.calculate_gain); param is leaky_relu's slope. */
export function calculateGain(nonlinearity: Nonlinearity, param?: number): number {
  switch (nonlinearity) {
    case 'linear':
    case 'identity':
    case 'sigmoid':
    case 'gelu':
    case 'silu':
      return 1;
    case 'tanh':
      return 5 / 3;
    case 'relu':
      return Math.SQRT2;
    case 'leaky_relu': {
      const slope = param ?? 0.01;
      return Math.sqrt(2 / (1 + slope * slope));
    }
    case 'selu':
      return 3 / 4;
    default:
      throw new ValueError('calculateGain', `unknown nonlinearity '${nonlinearity}'`);
  }
}

/** fanIn and fanOut of a weight laid out [out, in, ...receptive field] (Linear: [out, in]). */
export function computeFans(t: Tensor): {
  /** Inputs feeding each output: shape[1] times the receptive field. */
  fanIn: number;
  /** Outputs each input feeds: shape[0] times the receptive field. */
  fanOut: number;
} {
  if (t.ndim < 2) throw new ShapeError('computeFans', `fan in and fan out need at least 2 dims, got shape ${shapeStr(t.shape)}`);
  const receptive = t.shape.slice(2).reduce((a, b) => a * b, 1);
  return { fanIn: t.shape[1] * receptive, fanOut: t.shape[0] * receptive };
}

/** Glorot uniform: U(-a, a) with a = gain * sqrt(6 / (fanIn + fanOut)). */
export function xavierUniform_(t: Tensor, gain = 1): Tensor {
  const { fanIn, fanOut } = computeFans(t);
  const a = gain * Math.sqrt(6 / (fanIn + fanOut));
  return uniform_(t, -a, a);
}

/** Glorot normal: N(0, std^2) with std = gain * sqrt(2 / (fanIn + fanOut)). */
export function xavierNormal_(t: Tensor, gain = 1): Tensor {
  const { fanIn, fanOut } = computeFans(t);
  return normal_(t, 0, gain * Math.sqrt(2 / (fanIn + fanOut)));
}

/**
 * Options of kaimingUniform_ and kaimingNormal_ (like the arguments of torch.nn.init.kaiming_uniform_).
 */
export interface KaimingOptions {
  /** Negative slope of leaky_relu (default 0). */
  a?: number;
  /**
   * Keep the variance of activations in the forward pass ('fanIn', default) or of gradients in the
   * backward pass ('fanOut').
   */
  mode?: 'fanIn' | 'fanOut';
  /** The activation that follows, for calculateGain (default 'leaky_relu', with slope a). */
  nonlinearity?: Nonlinearity;
}

function kaimingStd(t: Tensor, opts: KaimingOptions): number {
  const { fanIn, fanOut } = computeFans(t);
  const fan = (opts.mode ?? 'fanIn') === 'fanIn' ? fanIn : fanOut;
  return calculateGain(opts.nonlinearity ?? 'leaky_relu', opts.a ?? 0) / Math.sqrt(fan);
}

/** He uniform: U(-b, b) with b = gain * sqrt(3 / fan). Linear's default is a = sqrt(5), giving b = 1/sqrt(fanIn). */
export function kaimingUniform_(t: Tensor, opts: KaimingOptions = {}): Tensor {
  const b = Math.sqrt(3) * kaimingStd(t, opts);
  return uniform_(t, -b, b);
}

/** He normal: N(0, std^2) with std = gain / sqrt(fan). */
export function kaimingNormal_(t: Tensor, opts: KaimingOptions = {}): Tensor {
  return normal_(t, 0, kaimingStd(t, opts));
}
