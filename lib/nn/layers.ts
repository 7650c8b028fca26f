// Basic layers: Linear, Embedding, LayerNorm, RMSNorm, Dropout, and the activation modules
// (ReLU, GELU, Sigmoid, Tanh, SiLU, Identity). Their initializations follow PyTorch's.
import { noGrad } from '../autograd/grad_mode';
import type { DType } from '../dtype';
import { ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { empty, ones } from '../ops/creation';
import { embedding } from '../ops/indexing';
import { linear } from '../ops/matmul';
import { layerNorm } from '../ops/norm';
import { dropout } from '../ops/random';
import { shapeStr } from '../shape';
import type { Tensor } from '../tensor';
import { kaimingUniform_, normal_, ones_, uniform_, zeros_ } from './init';
import { Module, Parameter } from './module';

/** Where and in which dtype a layer creates its parameters (float32 on the CPU by default). */
export interface FactoryOptions {
  /** Parameter dtype (default float32). */
  dtype?: DType;
  /** Parameter device: 'cpu' (default) or 'cuda:N'. */
  device?: string;
}

/** @internal A new parameter of shape, filled by init. */
export function newParameter(shape: readonly number[], f: FactoryOptions, init: (t: Tensor) => unknown): Parameter {
  const t = empty(shape, { dtype: f.dtype ?? 'float32', device: f.device ?? 'cpu' });
  init(t);
  return Parameter.own(t);
}

function checkWeight(op: string, w: Parameter, shape: readonly number[]): Parameter {
  if (w.ndim !== 2 || w.shape[0] !== shape[0] || w.shape[1] !== shape[1]) {
    throw new ShapeError(op, `weight must have shape ${shapeStr(shape)}, got ${shapeStr(w.shape)}`);
  }
  return w;
}

function checkSize(op: string, name: string, v: number): void {
  if (!Number.isInteger(v) || v <= 0) throw new ValueError(op, `${name} must be a positive integer, got ${v}`);
}

/** What a layer adds to its output when adapted (nn.lora's LoRA modules). */
export interface LinearDelta extends Module {
  /** Whether forward's output is added (false once the adapter is merged into the weight). */
  readonly active: boolean;
  /** The term added to the layer's output for input x. */
  forward(x: Tensor): Tensor;
}

/** y = x W^T + b with W of shape [outFeatures, inFeatures]; W and b start U(-1/sqrt(in), 1/sqrt(in)) like PyTorch. */
export class Linear extends Module {
  /** The weight [outFeatures, inFeatures]. */
  weight: Parameter;
  /** The bias [outFeatures], or null with bias: false. */
  bias: Parameter | null;
  /** Size of the last dim of the input. */
  readonly inFeatures: number;
  /** Size of the last dim of the output. */
  readonly outFeatures: number;
  /**
   * A low-rank adapter whose output forward adds to the layer's (nn.lora.apply sets it; null
   * without). It is a child module, so its parameters are the layer's `lora.A` and `lora.B`.
   */
  lora: LinearDelta | null = null;
  /** opts.weight: an existing [outFeatures, inFeatures] Parameter to use as the weight (weight tying). */
  constructor(inFeatures: number, outFeatures: number, opts: FactoryOptions & { bias?: boolean; weight?: Parameter } = {}) {
    super();
    checkSize('Linear', 'inFeatures', inFeatures);
    checkSize('Linear', 'outFeatures', outFeatures);
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.weight = opts.weight ? checkWeight('Linear', opts.weight, [outFeatures, inFeatures]) : newParameter([outFeatures, inFeatures], opts, (w) => kaimingUniform_(w, { a: Math.sqrt(5) }));
    const bound = 1 / Math.sqrt(inFeatures);
    this.bias = opts.bias === false ? null : newParameter([outFeatures], opts, (b) => uniform_(b, -bound, bound));
  }
  /** x [..., inFeatures] -> [..., outFeatures] (a ShapeError for another last dim). */
  override forward(x: Tensor): Tensor {
    if (x.shape[x.ndim - 1] !== this.inFeatures) {
      throw new ShapeError('Linear', `expects inputs with last dim ${this.inFeatures}, got shape ${shapeStr(x.shape)}`);
    }
    const lora = this.lora;
    if (!lora || !lora.active) return linear(x, this.weight, this.bias);
    return tidy(() => linear(x, this.weight, this.bias).add(lora.forward(x)));
  }
  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, bias=${this.bias !== null}`;
  }
}

/** Options of Embedding. */
export interface EmbeddingOptions extends FactoryOptions {
  /** Row whose vector starts at zero and receives no gradient (a padding token). */
  paddingIdx?: number;
}

/** A lookup table: forward(indices) gives weight[indices]. Weights start N(0, 1) like PyTorch. */
export class Embedding extends Module {
  /** The table [numEmbeddings, embeddingDim]. */
  weight: Parameter;
  /** Number of rows (the vocabulary size). */
  readonly numEmbeddings: number;
  /** Size of each row. */
  readonly embeddingDim: number;
  /** The padding row (made non-negative), or null. */
  readonly paddingIdx: number | null;
  /** opts.weight: an existing [numEmbeddings, embeddingDim] Parameter to use (weight tying, fromPretrained). */
  constructor(numEmbeddings: number, embeddingDim: number, opts: EmbeddingOptions & { weight?: Parameter } = {}) {
    super();
    checkSize('Embedding', 'numEmbeddings', numEmbeddings);
    checkSize('Embedding', 'embeddingDim', embeddingDim);
    this.numEmbeddings = numEmbeddings;
    this.embeddingDim = embeddingDim;
    let pad = opts.paddingIdx ?? null;
    if (pad !== null) {
      if (!Number.isInteger(pad) || pad < -numEmbeddings || pad >= numEmbeddings) {
        throw new ValueError('Embedding', `paddingIdx ${pad} is out of range for ${numEmbeddings} embeddings`);
      }
      if (pad < 0) pad += numEmbeddings;
    }
    this.paddingIdx = pad;
    this.weight = opts.weight
      ? checkWeight('Embedding', opts.weight, [numEmbeddings, embeddingDim])
      : newParameter([numEmbeddings, embeddingDim], opts, (w) => {
        normal_(w);
        if (pad !== null) tidy(() => void zeros_(w.select(0, pad!)));
      });
    if (pad !== null) {
      const row = pad;
      // The padding row's gradient is dropped before it reaches .grad (PyTorch's padding_idx).
      this.weight.registerHook((g) => {
        const keepRows = ones([numEmbeddings, 1], { dtype: g.dtype, device: g.device });
        const padRow = keepRows.select(0, row);
        padRow.fill_(0);
        padRow.dispose();
        const out = g.mul(keepRows);
        keepRows.dispose();
        return out;
      });
    }
  }

  /** An Embedding over existing weights [num, dim] (copied into a new parameter); frozen by default. */
  static fromPretrained(weight: Tensor, opts: { freeze?: boolean; paddingIdx?: number } = {}): Embedding {
    if (weight.ndim !== 2) throw new ShapeError('Embedding.fromPretrained', `expects a 2-D weight, got shape ${shapeStr(weight.shape)}`);
    const w = Parameter.own(noGrad(() => weight.clone()), !(opts.freeze ?? true));
    return new Embedding(weight.shape[0], weight.shape[1], { paddingIdx: opts.paddingIdx, weight: w });
  }

  /**
   * indices (int32/int64, any shape) -> rows [...indices.shape, embeddingDim]; an IndexError for an
   * index outside [0, numEmbeddings).
   */
  override forward(indices: Tensor): Tensor {
    return embedding(indices, this.weight);
  }
  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}${this.paddingIdx !== null ? `, paddingIdx=${this.paddingIdx}` : ''}`;
  }
}

function normShape(op: string, s: number | readonly number[]): number[] {
  const shape = typeof s === 'number' ? [s] : [...s];
  if (!shape.length) throw new ValueError(op, 'normalizedShape must not be empty');
  for (const d of shape) checkSize(op, 'normalizedShape entries', d);
  return shape;
}

function checkNormInput(op: string, x: Tensor, shape: readonly number[]): void {
  const tail = x.shape.slice(x.ndim - shape.length);
  if (x.ndim < shape.length || tail.some((d, i) => d !== shape[i])) {
    throw new ShapeError(op, `expects inputs ending in ${shapeStr(shape)}, got shape ${shapeStr(x.shape)}`);
  }
}

/** Options of LayerNorm and RMSNorm. */
export interface NormOptions extends FactoryOptions {
  /**
   * Added to the variance (or mean square) before the square root (LayerNorm default 1e-5; RMSNorm
   * default: the machine epsilon of the input dtype).
   */
  eps?: number;
  /** Learn a per-element scale (and shift, for LayerNorm) (default true). */
  elementwiseAffine?: boolean;
  /** LayerNorm only: learn the shift (default true). */
  bias?: boolean;
}

/** Layer normalization over the last dims (normalizedShape); weight starts at 1, bias at 0. */
export class LayerNorm extends Module {
  /** The scale [...normalizedShape] (null without elementwiseAffine). */
  weight: Parameter | null;
  /** The shift [...normalizedShape] (null without elementwiseAffine or with bias: false). */
  bias: Parameter | null;
  /** The trailing dims normalized over. */
  readonly normalizedShape: number[];
  /** Added to the variance for stability. */
  readonly eps: number;
  /**
   * Normalizes over the trailing dims normalizedShape (a number for the last dim only; like
   * torch.nn.LayerNorm).
   */
  constructor(normalizedShape: number | readonly number[], opts: NormOptions = {}) {
    super();
    this.normalizedShape = normShape('LayerNorm', normalizedShape);
    this.eps = opts.eps ?? 1e-5;
    const affine = opts.elementwiseAffine ?? true;
    this.weight = affine ? newParameter(this.normalizedShape, opts, ones_) : null;
    this.bias = affine && opts.bias !== false ? newParameter(this.normalizedShape, opts, zeros_) : null;
  }
  override forward(x: Tensor): Tensor {
    checkNormInput('LayerNorm', x, this.normalizedShape);
    return layerNorm(x, this.normalizedShape, this.weight, this.bias, this.eps);
  }
  override extraRepr(): string {
    return `${shapeStr(this.normalizedShape)}, eps=${this.eps}, elementwiseAffine=${this.weight !== null}`;
  }
}

const MACHINE_EPS: Partial<Record<DType, number>> = { float64: 2.220446049250313e-16, float16: 0.0009765625, bfloat16: 0.0078125 };

/**
 * RMS normalization: x / sqrt(mean(x^2 over the last dims) + eps) * weight. eps defaults to the
 * machine epsilon of x's dtype, like PyTorch.
 */
export function rmsNorm(x: Tensor, normalizedShape: number | readonly number[], weight?: Tensor | null, eps?: number): Tensor {
  const shape = normShape('rmsNorm', normalizedShape);
  checkNormInput('rmsNorm', x, shape);
  const e = eps ?? MACHINE_EPS[x.dtype] ?? 1.1920928955078125e-7;
  const dims = shape.map((_, i) => x.ndim - shape.length + i);
  return tidy(() => {
    const y = x.mul(x.square().mean(dims, true).add(e).rsqrt());
    return weight ? y.mul(weight) : y;
  });
}

/** RMSNorm (as in LLaMA); weight starts at 1. */
export class RMSNorm extends Module {
  /** The scale [...normalizedShape] (null without elementwiseAffine). */
  weight: Parameter | null;
  /** The trailing dims normalized over. */
  readonly normalizedShape: number[];
  /** Added to the mean square; undefined means the input dtype's machine epsilon. */
  readonly eps: number | undefined;
  /**
   * Normalizes over the trailing dims normalizedShape (a number for the last dim only; like
   * torch.nn.RMSNorm).
   */
  constructor(normalizedShape: number | readonly number[], opts: Omit<NormOptions, 'bias'> = {}) {
    super();
    this.normalizedShape = normShape('RMSNorm', normalizedShape);
    this.eps = opts.eps;
    this.weight = opts.elementwiseAffine ?? true ? newParameter(this.normalizedShape, opts, ones_) : null;
  }
  override forward(x: Tensor): Tensor {
    return rmsNorm(x, this.normalizedShape, this.weight, this.eps);
  }
  override extraRepr(): string {
    return `${shapeStr(this.normalizedShape)}, eps=${this.eps ?? 'auto'}`;
  }
}

/** Zeroes elements with probability p in training mode and scales the rest by 1/(1-p); identity in eval mode. */
export class Dropout extends Module {
  /** Probability of zeroing an element, in [0, 1]. */
  readonly p: number;
  /** p: the probability of zeroing an element (default 0.5; a ValueError outside [0, 1]). */
  constructor(p = 0.5) {
    super();
    if (!(p >= 0 && p <= 1)) throw new ValueError('Dropout', `p must be in [0, 1], got ${p}`);
    this.p = p;
  }
  override forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training);
  }
  override extraRepr(): string {
    return `p=${this.p}`;
  }
}

/** Returns its input. */
export class Identity extends Module {
  override forward(x: Tensor): Tensor {
    return x;
  }
}
/** max(x, 0) elementwise (like torch.nn.ReLU). */
export class ReLU extends Module {
  override forward(x: Tensor): Tensor {
    return x.relu();
  }
}
/** GELU; approximate 'tanh' is the GPT-2 form. */
export class GELU extends Module {
  /** 'none' uses the exact normal CDF; 'tanh' its tanh approximation. */
  readonly approximate: 'none' | 'tanh';
  /** approximate: 'none' (default, exact) or 'tanh'. */
  constructor(opts: { approximate?: 'none' | 'tanh' } = {}) {
    super();
    this.approximate = opts.approximate ?? 'none';
    if (this.approximate !== 'none' && this.approximate !== 'tanh') {
      throw new ValueError('GELU', `approximate must be 'none' or 'tanh', got '${this.approximate}'`);
    }
  }
  override forward(x: Tensor): Tensor {
    return x.gelu(this.approximate);
  }
  override extraRepr(): string {
    return `approximate='${this.approximate}'`;
  }
}
/** 1 / (1 + e^-x) elementwise (like torch.nn.Sigmoid). */
export class Sigmoid extends Module {
  override forward(x: Tensor): Tensor {
    return x.sigmoid();
  }
}
/** Hyperbolic tangent elementwise (like torch.nn.Tanh). */
export class Tanh extends Module {
  override forward(x: Tensor): Tensor {
    return x.tanh();
  }
}
/** x * sigmoid(x) (also called Swish). */
export class SiLU extends Module {
  override forward(x: Tensor): Tensor {
    return x.silu();
  }
}
