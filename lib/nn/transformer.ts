// Transformer building blocks like torch.nn's: TransformerEncoderLayer / TransformerDecoderLayer
// (pre- or post-norm), the TransformerEncoder / TransformerDecoder stacks, the encoder-decoder
// Transformer, and positional encodings (fixed sinusoidal, learned).
import { ValueError } from '../errors';
import { tidy } from '../memory';
import { tensor } from '../ops/creation';
import type { Tensor } from '../tensor';
import { AttentionForwardOptions, MultiheadAttention } from './attention';
import { normal_, xavierUniform_ } from './init';
import { Dropout, FactoryOptions, LayerNorm, Linear, newParameter } from './layers';
import { Module, ModuleList, Parameter, TensorModule } from './module';
import { SequenceClassifier } from './sequence_classifier';
import type { SequenceClassifierOptions } from './sequence_classifier';

/** The feed-forward activation of Transformer layers: 'relu' (default) or 'gelu'. */
export type Activation = 'relu' | 'gelu';

/**
 * Options of TransformerEncoderLayer, TransformerDecoderLayer and Transformer (like the keyword
 * arguments of torch.nn.TransformerEncoderLayer).
 */
export interface TransformerLayerOptions extends FactoryOptions {
  /** Hidden size of the feed-forward block (default 2048). */
  dimFeedforward?: number;
  /** Dropout after attention, in the feed-forward block and on attention probabilities (default 0.1). */
  dropout?: number;
  /** Activation of the feed-forward block (default 'relu'). */
  activation?: Activation;
  /** The LayerNorms' eps (default 1e-5). */
  layerNormEps?: number;
  /** Inputs [B, L, E] (default true); false means [L, B, E]. */
  batchFirst?: boolean;
  /** Pre-norm (x + f(norm(x))) instead of post-norm (norm(x + f(x))) (default false, like PyTorch). */
  normFirst?: boolean;
  /** Biases in the linear layers and layer norms (default true). */
  bias?: boolean;
}

/** What encoder and decoder layers share: self-attention, the feed-forward block, residual wiring. */
abstract class TransformerLayer extends Module {
  /** Self-attention. */
  selfAttn: MultiheadAttention;
  /** Feed-forward expansion dModel -> dimFeedforward. */
  linear1: Linear;
  /** Dropout inside the feed-forward block, after the activation. */
  dropout: Dropout;
  /** Feed-forward projection dimFeedforward -> dModel. */
  linear2: Linear;
  /** LayerNorm of the self-attention sublayer. */
  norm1: LayerNorm;
  /** LayerNorm of the second sublayer (feed-forward in the encoder, cross-attention in the decoder). */
  norm2: LayerNorm;
  /** Dropout on the self-attention output. */
  dropout1: Dropout;
  /** Dropout on the second sublayer's output. */
  dropout2: Dropout;
  /** Pre-norm (true) or post-norm (false) residual wiring. */
  readonly normFirst: boolean;
  /** The feed-forward activation. */
  readonly activation: Activation;

  constructor(
    /** Model width E: input and output features. */
    readonly dModel: number,
    /** Attention heads (must divide dModel). */
    readonly nHead: number,
    /** The options the layer was made with (TransformerEncoder copies them for its other layers). */
    readonly options: TransformerLayerOptions,
  ) {
    super();
    const p = options.dropout ?? 0.1;
    const common = { dtype: options.dtype, device: options.device, bias: options.bias };
    this.selfAttn = new MultiheadAttention(dModel, nHead, { ...common, dropout: p, batchFirst: options.batchFirst });
    this.linear1 = new Linear(dModel, options.dimFeedforward ?? 2048, common);
    this.dropout = new Dropout(p);
    this.linear2 = new Linear(options.dimFeedforward ?? 2048, dModel, common);
    const norm = { ...common, eps: options.layerNormEps ?? 1e-5 };
    this.norm1 = new LayerNorm(dModel, norm);
    this.norm2 = new LayerNorm(dModel, norm);
    this.dropout1 = new Dropout(p);
    this.dropout2 = new Dropout(p);
    this.normFirst = options.normFirst ?? false;
    this.activation = options.activation ?? 'relu';
    if (this.activation !== 'relu' && this.activation !== 'gelu') {
      throw new ValueError(this.constructor.name, `activation must be 'relu' or 'gelu', got '${this.activation}'`);
    }
  }

  /** One sublayer with its residual connection and norm, in pre- or post-norm order. */
  protected residual(x: Tensor, norm: LayerNorm, f: (h: Tensor) => Tensor): Tensor {
    return this.normFirst ? x.add(f(norm.forward(x))) : norm.forward(x.add(f(x)));
  }

  /** dropout1(selfAttn(x, x, x)): the self-attention sublayer without its residual. */
  protected selfAttention(x: Tensor, opts: AttentionForwardOptions): Tensor {
    return this.dropout1.forward(this.selfAttn.forward(x, x, x, opts).output);
  }

  /** linear2(dropout(activation(linear1(x)))) followed by outDropout. */
  protected feedForward(x: Tensor, outDropout: Dropout): Tensor {
    const h = this.linear1.forward(x);
    const a = this.activation === 'gelu' ? h.gelu() : h.relu();
    return outDropout.forward(this.linear2.forward(this.dropout.forward(a)));
  }
}

/**
 * Masks of TransformerEncoderLayer.forward (MultiheadAttention conventions: bool true = blocked, float
 * = added).
 */
export interface EncoderLayerForwardOptions {
  /** Attention mask [S, S] (or per batch and head) for self-attention. */
  srcMask?: Tensor | null;
  /** Shape [B, S], true where a source position is padding. */
  srcKeyPaddingMask?: Tensor | null;
  /** Add the causal mask to self-attention. */
  isCausal?: boolean;
}

/** Self-attention then feed-forward, each with residual and LayerNorm (torch.nn.TransformerEncoderLayer). */
export class TransformerEncoderLayer extends TransformerLayer {
  constructor(dModel: number, nHead: number, opts: TransformerLayerOptions = {}) {
    super(dModel, nHead, opts);
  }
  /** src [B, S, E] ([S, B, E] without batchFirst) -> the same shape. */
  override forward(src: Tensor, opts: EncoderLayerForwardOptions = {}): Tensor {
    return tidy(() => {
      const attn = { attnMask: opts.srcMask, keyPaddingMask: opts.srcKeyPaddingMask, isCausal: opts.isCausal };
      const x = this.residual(src, this.norm1, (h) => this.selfAttention(h, attn));
      return this.residual(x, this.norm2, (h) => this.feedForward(h, this.dropout2));
    });
  }
}

/**
 * Masks of TransformerDecoderLayer.forward and TransformerDecoder.forward (bool true = blocked, float =
 * added).
 */
export interface DecoderLayerForwardOptions {
  /** Attention mask [T, T] for self-attention over the target. */
  tgtMask?: Tensor | null;
  /** Attention mask [T, S] for cross-attention over the memory. */
  memoryMask?: Tensor | null;
  /** Shape [B, T], true where a target position is padding. */
  tgtKeyPaddingMask?: Tensor | null;
  /** Shape [B, S], true where a memory position is padding. */
  memoryKeyPaddingMask?: Tensor | null;
  /** Add the causal mask to self-attention (what autoregressive decoding needs). */
  tgtIsCausal?: boolean;
  /** Add the causal mask to cross-attention. */
  memoryIsCausal?: boolean;
}

/** Self-attention, cross-attention over the encoder's memory, feed-forward (torch.nn.TransformerDecoderLayer). */
export class TransformerDecoderLayer extends TransformerLayer {
  /** Cross-attention from the target to the memory. */
  multiheadAttn: MultiheadAttention;
  /** LayerNorm of the feed-forward sublayer. */
  norm3: LayerNorm;
  /** Dropout on the feed-forward output. */
  dropout3: Dropout;
  constructor(dModel: number, nHead: number, opts: TransformerLayerOptions = {}) {
    super(dModel, nHead, opts);
    const p = opts.dropout ?? 0.1;
    this.multiheadAttn = new MultiheadAttention(dModel, nHead, { dtype: opts.dtype, device: opts.device, bias: opts.bias, dropout: p, batchFirst: opts.batchFirst });
    this.norm3 = new LayerNorm(dModel, { dtype: opts.dtype, device: opts.device, bias: opts.bias, eps: opts.layerNormEps ?? 1e-5 });
    this.dropout3 = new Dropout(p);
  }
  /** tgt [B, T, E] attending to memory [B, S, E] (the encoder output) -> [B, T, E]. */
  override forward(tgt: Tensor, memory: Tensor, opts: DecoderLayerForwardOptions = {}): Tensor {
    return tidy(() => {
      const selfOpts = { attnMask: opts.tgtMask, keyPaddingMask: opts.tgtKeyPaddingMask, isCausal: opts.tgtIsCausal };
      const cross = { attnMask: opts.memoryMask, keyPaddingMask: opts.memoryKeyPaddingMask, isCausal: opts.memoryIsCausal };
      let x = this.residual(tgt, this.norm1, (h) => this.selfAttention(h, selfOpts));
      x = this.residual(x, this.norm2, (h) => this.dropout2.forward(this.multiheadAttn.forward(h, memory, memory, cross).output));
      // As in PyTorch, dropout2 follows cross-attention here and dropout3 the feed-forward block.
      return this.residual(x, this.norm3, (h) => this.feedForward(h, this.dropout3));
    });
  }
}

type LayerSource<L> = L | ((i: number) => L);

/** numLayers layers: from a factory, or the given layer first and fresh layers of the same configuration after it. */
function makeLayers<L extends TransformerLayer>(src: LayerSource<L>, numLayers: number, fresh: (l: L) => L): ModuleList<L> {
  if (!Number.isInteger(numLayers) || numLayers <= 0) throw new ValueError('Transformer', `numLayers must be a positive integer, got ${numLayers}`);
  const layers: L[] = [];
  for (let i = 0; i < numLayers; i++) layers.push(typeof src === 'function' ? src(i) : i === 0 ? src : fresh(src));
  return new ModuleList(layers);
}

/**
 * A stack of encoder layers and an optional final norm. Pass a factory (i) => layer, or one layer:
 * it becomes layer 0 and the others are new layers with its configuration and their own random
 * initialization (torch deep-copies the layer instead, so all its layers start equal).
 */
export class TransformerEncoder extends Module {
  /** The encoder layers, applied in order. */
  layers: ModuleList<TransformerEncoderLayer>;
  /** Final norm applied after the last layer, or null. */
  norm: TensorModule | null;
  constructor(encoderLayer: LayerSource<TransformerEncoderLayer>, numLayers: number, opts: { norm?: TensorModule | null } = {}) {
    super();
    this.layers = makeLayers(encoderLayer, numLayers, (l) => new TransformerEncoderLayer(l.dModel, l.nHead, l.options));
    this.norm = opts.norm ?? null;
  }
  /** src through every layer (mask and srcKeyPaddingMask as the layers take them), then norm. */
  override forward(src: Tensor, opts: { mask?: Tensor | null; srcKeyPaddingMask?: Tensor | null; isCausal?: boolean } = {}): Tensor {
    return tidy(() => {
      let x = src;
      for (const layer of this.layers) x = layer.forward(x, { srcMask: opts.mask, srcKeyPaddingMask: opts.srcKeyPaddingMask, isCausal: opts.isCausal });
      return this.norm ? this.norm.forward(x) : x;
    });
  }

  /** The model width E (the first layer's). */
  get dModel(): number {
    return this.layers.at(0).dModel;
  }

  /** Whether inputs are [B, S, E] (the first layer's attention's batchFirst) or [S, B, E]. */
  get batchFirst(): boolean {
    return this.layers.at(0).selfAttn.batchFirst;
  }

  /**
   * A SequenceClassifier over this encoder: embeddings in, pooled hidden states (default 'mean' over
   * the real positions) through a new Linear head to numLabels logits.
   */
  withHead<M extends TransformerEncoder>(this: M, opts: SequenceClassifierOptions): SequenceClassifier<M> {
    return new SequenceClassifier(this, opts);
  }
}

/** A stack of decoder layers and an optional final norm (see TransformerEncoder for the layer argument). */
export class TransformerDecoder extends Module {
  /** The decoder layers, applied in order. */
  layers: ModuleList<TransformerDecoderLayer>;
  /** Final norm applied after the last layer, or null. */
  norm: TensorModule | null;
  constructor(decoderLayer: LayerSource<TransformerDecoderLayer>, numLayers: number, opts: { norm?: TensorModule | null } = {}) {
    super();
    this.layers = makeLayers(decoderLayer, numLayers, (l) => new TransformerDecoderLayer(l.dModel, l.nHead, l.options));
    this.norm = opts.norm ?? null;
  }
  /** tgt through every layer, each attending to memory, then norm. */
  override forward(tgt: Tensor, memory: Tensor, opts: DecoderLayerForwardOptions = {}): Tensor {
    return tidy(() => {
      let x = tgt;
      for (const layer of this.layers) x = layer.forward(x, memory, opts);
      return this.norm ? this.norm.forward(x) : x;
    });
  }
}

/** Options of Transformer: the sizes and the layer options. */
export interface TransformerOptions extends TransformerLayerOptions {
  /** Model width (default 512). */
  dModel?: number;
  /** Attention heads (default 8). */
  nHead?: number;
  /** Encoder layers (default 6). */
  numEncoderLayers?: number;
  /** Decoder layers (default 6). */
  numDecoderLayers?: number;
}

/** Masks of Transformer.forward, as the encoder and decoder layers take them. */
export interface TransformerForwardOptions {
  /** Encoder self-attention mask [S, S]. */
  srcMask?: Tensor | null;
  /** Decoder self-attention mask [T, T] (or tgtIsCausal). */
  tgtMask?: Tensor | null;
  /** Decoder cross-attention mask [T, S]. */
  memoryMask?: Tensor | null;
  /** Shape [B, S], true where a source position is padding. */
  srcKeyPaddingMask?: Tensor | null;
  /** Shape [B, T], true where a target position is padding. */
  tgtKeyPaddingMask?: Tensor | null;
  /** Shape [B, S], true where a memory position is padding (usually srcKeyPaddingMask). */
  memoryKeyPaddingMask?: Tensor | null;
  /** Causal encoder self-attention. */
  srcIsCausal?: boolean;
  /** Causal decoder self-attention. */
  tgtIsCausal?: boolean;
  /** Causal cross-attention. */
  memoryIsCausal?: boolean;
}

/**
 * The encoder-decoder Transformer (torch.nn.Transformer; defaults dModel 512, 8 heads, 6 + 6 layers,
 * batchFirst true). Matrices are initialized Xavier-uniform, as PyTorch does.
 */
export class Transformer extends Module {
  /** The encoder stack with its final LayerNorm. */
  encoder: TransformerEncoder;
  /** The decoder stack with its final LayerNorm. */
  decoder: TransformerDecoder;
  /** Model width. */
  readonly dModel: number;
  /** Attention heads per layer. */
  readonly nHead: number;
  constructor(opts: TransformerOptions = {}) {
    super();
    this.dModel = opts.dModel ?? 512;
    this.nHead = opts.nHead ?? 8;
    const norm = () => new LayerNorm(this.dModel, { dtype: opts.dtype, device: opts.device, bias: opts.bias, eps: opts.layerNormEps ?? 1e-5 });
    this.encoder = new TransformerEncoder(() => new TransformerEncoderLayer(this.dModel, this.nHead, opts), opts.numEncoderLayers ?? 6, { norm: norm() });
    this.decoder = new TransformerDecoder(() => new TransformerDecoderLayer(this.dModel, this.nHead, opts), opts.numDecoderLayers ?? 6, { norm: norm() });
    for (const p of this.parameters()) if (p.ndim > 1) xavierUniform_(p);
  }

  /** Whether src and tgt are [B, L, E] (the layers' batchFirst) or [L, B, E]. */
  get batchFirst(): boolean {
    return this.encoder.batchFirst;
  }

  /** src [B, S, E] and tgt [B, T, E] (batchFirst) -> [B, T, E]. */
  override forward(src: Tensor, tgt: Tensor, opts: TransformerForwardOptions = {}): Tensor {
    return tidy(() => {
      const memory = this.encoder.forward(src, { mask: opts.srcMask, srcKeyPaddingMask: opts.srcKeyPaddingMask, isCausal: opts.srcIsCausal });
      return this.decoder.forward(tgt, memory, {
        tgtMask: opts.tgtMask,
        memoryMask: opts.memoryMask,
        tgtKeyPaddingMask: opts.tgtKeyPaddingMask,
        memoryKeyPaddingMask: opts.memoryKeyPaddingMask,
        tgtIsCausal: opts.tgtIsCausal,
        memoryIsCausal: opts.memoryIsCausal,
      });
    });
  }

  /** A float [sz, sz] mask: 0 on and below the diagonal, -Infinity above (future positions blocked). */
  static generateSquareSubsequentMask(sz: number, opts: FactoryOptions = {}): Tensor {
    if (!Number.isInteger(sz) || sz < 0) throw new ValueError('generateSquareSubsequentMask', `size must be a non-negative integer, got ${sz}`);
    const data = new Float64Array(sz * sz);
    for (let i = 0; i < sz; i++) data.fill(-Infinity, i * sz + i + 1, (i + 1) * sz);
    return tensor(data, { shape: [sz, sz], dtype: opts.dtype ?? 'float32', device: opts.device ?? 'cpu' });
  }
}

export interface PositionalOptions extends FactoryOptions {
  /** Longest sequence (default 5000 for sinusoidal, required for learned). */
  maxLen?: number;
  /** Dropout applied after adding the positions (default 0). */
  dropout?: number;
  /** Inputs [B, T, E] (default true); false means [T, B, E]. */
  batchFirst?: boolean;
}

/** Adds positions offset..offset+T of table [maxLen, E] to x and applies dropout. */
function addPositions(op: string, m: Module & { dropout: Dropout; batchFirst: boolean }, x: Tensor, table: Tensor, offset: number): Tensor {
  const T = x.shape[m.batchFirst ? 1 : 0];
  if (x.ndim !== 3 || x.shape[2] !== table.shape[1]) {
    throw new ValueError(op, `expects inputs [${m.batchFirst ? 'B, T' : 'T, B'}, ${table.shape[1]}], got shape [${x.shape.join(', ')}]`);
  }
  if (!Number.isInteger(offset) || offset < 0 || offset + T > table.shape[0]) {
    throw new ValueError(op, `positions ${offset}..${offset + T - 1} exceed maxLen ${table.shape[0]}`);
  }
  return tidy(() => {
    const pos = table.narrow(0, offset, T);
    return m.dropout.forward(x.add(m.batchFirst ? pos : pos.unsqueeze(1)));
  });
}

/** The fixed sin/cos positional encoding of "Attention Is All You Need", added to the input. */
export class SinusoidalPositionalEncoding extends Module {
  /** Dropout after adding the positions. */
  dropout: Dropout;
  /** The encodings [maxLen, dModel] (a non-persistent buffer: not in stateDict()). */
  readonly pe: Tensor;
  /** Whether inputs are [B, T, E] (true) or [T, B, E]. */
  readonly batchFirst: boolean;
  constructor(dModel: number, opts: PositionalOptions = {}) {
    super();
    const maxLen = opts.maxLen ?? 5000;
    const data = new Float64Array(maxLen * dModel);
    for (let pos = 0; pos < maxLen; pos++) {
      for (let i = 0; i < dModel; i += 2) {
        const angle = pos * Math.exp((-i * Math.log(10000)) / dModel);
        data[pos * dModel + i] = Math.sin(angle);
        if (i + 1 < dModel) data[pos * dModel + i + 1] = Math.cos(angle);
      }
    }
    const pe = tensor(data, { shape: [maxLen, dModel], dtype: opts.dtype ?? 'float32', device: opts.device ?? 'cpu' });
    this.pe = this.registerBuffer('pe', pe, { persistent: false });
    this.dropout = new Dropout(opts.dropout ?? 0);
    this.batchFirst = opts.batchFirst ?? true;
  }
  /** x plus the encodings of positions offset.. (offset > 0 when decoding step by step). */
  override forward(x: Tensor, opts: { offset?: number } = {}): Tensor {
    return addPositions('SinusoidalPositionalEncoding', this, x, this.pe, opts.offset ?? 0);
  }
}

/** A learned table of position vectors [maxLen, E] (N(0, 1) init, like Embedding), added to the input. */
export class LearnedPositionalEmbedding extends Module {
  /** The learned positions [maxLen, dModel]. */
  weight: Parameter;
  /** Dropout after adding the positions. */
  dropout: Dropout;
  /** Whether inputs are [B, T, E] (true) or [T, B, E]. */
  readonly batchFirst: boolean;
  constructor(maxLen: number, dModel: number, opts: Omit<PositionalOptions, 'maxLen'> = {}) {
    super();
    this.weight = newParameter([maxLen, dModel], opts, (w) => normal_(w));
    this.dropout = new Dropout(opts.dropout ?? 0);
    this.batchFirst = opts.batchFirst ?? true;
  }
  /** x plus the learned vectors of positions offset.. (offset > 0 when decoding step by step). */
  override forward(x: Tensor, opts: { offset?: number } = {}): Tensor {
    return addPositions('LearnedPositionalEmbedding', this, x, this.weight, opts.offset ?? 0);
  }
}
