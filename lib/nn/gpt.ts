// A GPT-2 style language model: token + learned position embeddings, pre-norm blocks of causal
// self-attention and a 4x tanh-GELU MLP, a final LayerNorm and an output head tied to the token
// embedding; GPT-2 initialization; training forward with loss; generation with a KV cache. Where
// the layers are the plain ones GPT builds, blocks run fused ops: the MLP's fc with its bias and GELU
// in one product (linearGelu), the residual add with the second norm (addLayerNorm).
import { noGrad } from '../autograd/grad_mode';
import { isIntegral } from '../dtype';
import { DTypeError, ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { linearGelu } from '../ops/matmul';
import { addLayerNorm } from '../ops/norm';
import { cat } from '../ops/shape';
import { sameShape, shapeStr } from '../shape';
import type { Tensor } from '../tensor';
import { KVCache, MultiheadAttention } from './attention';
import { normal_, zeros_ } from './init';
import { Dropout, Embedding, LayerNorm, Linear } from './layers';
import { crossEntropy } from './losses';
import { Module, ModuleList } from './module';
import { SamplingOptions, sampleLogits } from './sampling';
import { gpt2FromPretrained, gpt2SavePretrained } from './gpt_hf';
import type { FromPretrainedOptions } from './gpt_hf';
import { GPTForSequenceClassification } from './gpt_classify';
import type { SequenceClassificationOptions } from './gpt_classify';

/**
 * The shape of a GPT model (the fields of nanoGPT's GPTConfig); GPT-2 small is { vocabSize: 50257,
 * blockSize: 1024, nLayer: 12, nHead: 12, nEmbd: 768 }.
 */
export interface GPTConfig {
  /** Number of token ids (the rows of wte and the logits per position). */
  vocabSize: number;
  /** Longest context (number of learned positions). */
  blockSize: number;
  /** Number of Transformer blocks. */
  nLayer: number;
  /** Attention heads per block (must divide nEmbd). */
  nHead: number;
  /** Model width: embedding and residual-stream features. */
  nEmbd: number;
  /** Dropout on embeddings, attention probabilities and residual branches (default 0). */
  dropout?: number;
  /** Biases in linear layers and layer norms (default true, as in GPT-2). */
  bias?: boolean;
  /** The layer norms' epsilon (default 1e-5, GPT-2's layer_norm_epsilon). */
  layerNormEps?: number;
}

/** fc (E -> 4E), tanh-GELU, proj (4E -> E), dropout. */
export class MLP extends Module {
  /** Expands E -> 4E. */
  fc: Linear;
  /** Projects 4E -> E back into the residual stream. */
  proj: Linear;
  /** Dropout on the MLP output (training only). */
  drop: Dropout;
  /** The MLP of a block of width nEmbd. */
  constructor(nEmbd: number, bias: boolean, dropout: number) {
    super();
    this.fc = new Linear(nEmbd, 4 * nEmbd, { bias });
    this.proj = new Linear(4 * nEmbd, nEmbd, { bias });
    this.drop = new Dropout(dropout);
  }
  /** x [..., E] -> [..., E]. */
  override forward(x: Tensor): Tensor {
    return tidy(() => this.drop.forward(this.proj.forward(this.activation(x))));
  }
  /**
   * gelu(fc(x), 'tanh'): one fused product when fc is exactly a Linear with a bias and no active
   * adapter (a subclass or a LoRA may change what fc computes), else fc then gelu.
   */
  private activation(x: Tensor): Tensor {
    const fc = this.fc;
    const plain = fc.constructor === Linear && fc.bias !== null && !fc.lora?.active && x.shape[x.ndim - 1] === fc.inFeatures;
    return plain ? linearGelu(x, fc.weight, fc.bias) : fc.forward(x).gelu('tanh');
  }
}

/** x + drop(attn(ln1(x))), then x + mlp(ln2(x)). */
export class Block extends Module {
  /** LayerNorm before attention. */
  ln1: LayerNorm;
  /** Causal self-attention. */
  attn: MultiheadAttention;
  /** Dropout on the attention output (training only). */
  drop: Dropout;
  /** LayerNorm before the MLP. */
  ln2: LayerNorm;
  /** The feed-forward part. */
  mlp: MLP;
  /** One block of a GPT with configuration cfg (all fields given). */
  constructor(cfg: Required<GPTConfig>) {
    super();
    this.ln1 = new LayerNorm(cfg.nEmbd, { bias: cfg.bias, eps: cfg.layerNormEps });
    this.attn = new MultiheadAttention(cfg.nEmbd, cfg.nHead, { bias: cfg.bias, dropout: cfg.dropout });
    this.drop = new Dropout(cfg.dropout);
    this.ln2 = new LayerNorm(cfg.nEmbd, { bias: cfg.bias, eps: cfg.layerNormEps });
    this.mlp = new MLP(cfg.nEmbd, cfg.bias, cfg.dropout);
  }
  /**
   * mask: a bool [T, S] mask (true = blocked), or 'causal' for the end-aligned causal mask (which
   * lets attention run fused); kvCache: this layer's cache when decoding incrementally.
   */
  override forward(x: Tensor, mask: Tensor | 'causal' | null, kvCache?: KVCache): Tensor {
    return tidy(() => {
      const h = this.ln1.forward(x);
      const causal = mask === 'causal';
      const a = this.drop.forward(this.attn.forward(h, h, h, { attnMask: causal ? null : mask, isCausal: causal, kvCache }).output);
      const ln2 = this.ln2;
      // The residual add and ln2 in one pass when ln2 is exactly a LayerNorm over the last dim.
      if (ln2.constructor === LayerNorm && ln2.normalizedShape.length === 1 && sameShape(a.shape, x.shape) && ln2.normalizedShape[0] === x.shape[x.ndim - 1]) {
        const [y, n2] = addLayerNorm(x, a, ln2.weight, ln2.bias, ln2.eps);
        return y.add(this.mlp.forward(n2));
      }
      const y = x.add(a);
      return y.add(this.mlp.forward(ln2.forward(y)));
    });
  }
}

/** Options of GPT.forward. */
export interface GPTForwardOptions {
  /** One KVCache per layer (createCache()): the tokens in idx continue the cached ones. */
  kvCache?: KVCache[];
  /** Compute logits for the last position only ([B, 1, V]), as generation needs. */
  lastOnly?: boolean;
  /**
   * Embeddings [B or 1, P, nEmbd] placed before the tokens' (prompt tuning's soft prompt): they take
   * positions 0..P-1 and the tokens P..P+T-1; logits and the loss cover the tokens only. With a KV
   * cache, pass it on the first call only (the cache then holds it).
   */
  prefixEmbeds?: Tensor;
  /** The input embeddings [B, T, nEmbd] to use instead of wte(idx) (idx must then be null). */
  inputsEmbeds?: Tensor;
}

/** Options of GPT.generate: the sampling options (temperature, topK, topP) and how to run. */
export interface GenerateOptions extends SamplingOptions {
  /** Decode incrementally with a KV cache (default true); false reruns the whole context each step. */
  useCache?: boolean;
  /** Called each step with the last position's logits [B, V] (valid during the call). */
  onLogits?: (logits: Tensor, step: number) => void;
  /** A soft prompt [1 or B, P, nEmbd] before the ids (forward's prefixEmbeds), e.g. a PromptTuning's. */
  prefixEmbeds?: Tensor;
}

/**
 * GPT-2 (parameter names: wte, wpe, blocks.N.{ln1, attn, ln2, mlp.fc, mlp.proj}, lnF, lmHead; lmHead.weight
 * is the same Parameter as wte.weight). Weights start N(0, 0.02), biases 0, and the projections
 * back into the residual stream (attn.outProj, mlp.proj) N(0, 0.02 / sqrt(2 nLayer)).
 */
export class GPT extends Module {
  /** Token embedding [vocabSize, nEmbd] (shared with lmHead). */
  wte: Embedding;
  /** Learned position embedding [blockSize, nEmbd]. */
  wpe: Embedding;
  /** Dropout on the summed embeddings (training only). */
  drop: Dropout;
  /** The nLayer Transformer blocks. */
  blocks: ModuleList<Block>;
  /** The final LayerNorm. */
  lnF: LayerNorm;
  /** Output head nEmbd -> vocabSize without bias; its weight is wte.weight. */
  lmHead: Linear;
  /** The configuration, defaults filled in. */
  readonly config: Required<GPTConfig>;

  /**
   * A freshly initialized model on the CPU in float32 (move it with to()); a ValueError for a
   * non-positive or non-integer size.
   */
  constructor(config: GPTConfig) {
    super();
    const cfg: Required<GPTConfig> = { dropout: 0, bias: true, layerNormEps: 1e-5, ...config };
    if (!(cfg.layerNormEps > 0)) throw new ValueError('GPT', `config.layerNormEps must be > 0, got ${cfg.layerNormEps}`);
    for (const k of ['vocabSize', 'blockSize', 'nLayer', 'nHead', 'nEmbd'] as const) {
      if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) throw new ValueError('GPT', `config.${k} must be a positive integer, got ${cfg[k]}`);
    }
    this.config = cfg;
    this.wte = new Embedding(cfg.vocabSize, cfg.nEmbd);
    this.wpe = new Embedding(cfg.blockSize, cfg.nEmbd);
    this.drop = new Dropout(cfg.dropout);
    this.blocks = new ModuleList(Array.from({ length: cfg.nLayer }, () => new Block(cfg)));
    this.lnF = new LayerNorm(cfg.nEmbd, { bias: cfg.bias, eps: cfg.layerNormEps });
    this.lmHead = new Linear(cfg.nEmbd, cfg.vocabSize, { bias: false, weight: this.wte.weight });
    this.initWeights();
  }

  private initWeights(): void {
    this.apply((m) => {
      if (m instanceof Linear) {
        if (m.weight !== this.wte.weight) normal_(m.weight, 0, 0.02);
        if (m.bias) zeros_(m.bias);
      } else if (m instanceof Embedding) {
        normal_(m.weight, 0, 0.02);
      } else if (m instanceof MultiheadAttention) {
        normal_(m.inProjWeight!, 0, 0.02);
        if (m.inProjBias) zeros_(m.inProjBias);
      }
    });
    const std = 0.02 / Math.sqrt(2 * this.config.nLayer);
    for (const b of this.blocks) {
      normal_(b.attn.outProj.weight, 0, std);
      normal_(b.mlp.proj.weight, 0, std);
    }
  }

  /**
   * A GPT from a Hugging Face GPT-2 folder (config.json and model.safetensors, as transformers'
   * GPT2LMHeadModel.save_pretrained writes them, or the original openai-community layout).
   */
  static fromPretrained(dir: string, opts: FromPretrainedOptions = {}): GPT {
    return gpt2FromPretrained(dir, opts);
  }

  /** Writes this model as a Hugging Face GPT-2 folder that GPT2LMHeadModel.from_pretrained loads. */
  savePretrained(dir: string): void {
    gpt2SavePretrained(this, dir);
  }

  /**
   * A GPTForSequenceClassification over this model (shared, not copied): a new `score` head on the
   * last real token of each row (padTokenId marks padding).
   */
  withHead(opts: SequenceClassificationOptions): GPTForSequenceClassification {
    return new GPTForSequenceClassification(this, opts);
  }

  /** Empty KV caches, one per layer, for forward({kvCache}). */
  createCache(): KVCache[] {
    return Array.from({ length: this.config.nLayer }, () => new KVCache(this.config.blockSize));
  }

  /**
   * idx [B, T] token ids -> logits [B, T, V]; with targets [B, T] also the mean cross-entropy loss
   * (targets equal to -100 are ignored).
   */
  override forward(idx: Tensor | null, targets?: Tensor | null, opts: GPTForwardOptions = {}): {
    /** Next-token logits [B, T, V] ([B, 1, V] with lastOnly), in the model's dtype. */
    logits: Tensor;
    /** With targets: the mean cross-entropy over the non-ignored positions, a scalar. */
    loss?: Tensor;
  } {
    const src = opts.inputsEmbeds ?? idx;
    if (targets && src && (targets.ndim !== 2 || targets.shape[0] !== src.shape[0] || targets.shape[1] !== src.shape[1])) {
      throw new ShapeError('GPT', `targets must be [${src.shape[0]}, ${src.shape[1]}] like idx, got ${shapeStr(targets.shape)}`);
    }
    return tidy(() => {
      const logits = this.lmHead.forward(this.hiddenStates(idx, opts));
      if (!targets) return { logits };
      const V = this.config.vocabSize;
      return { logits, loss: crossEntropy(logits.reshape(-1, V), targets.reshape(-1)) };
    });
  }

  /**
   * The final hidden states lnF(h) [B, T, nEmbd] ([B, 1, nEmbd] with lastOnly) of idx (or
   * opts.inputsEmbeds): what lmHead maps to logits, and what a task head (classification) reads.
   */
  hiddenStates(idx: Tensor | null, opts: GPTForwardOptions = {}): Tensor {
    const E = this.config.nEmbd;
    const given = opts.inputsEmbeds;
    if (given) {
      if (idx) throw new ValueError('GPT', 'pass token ids or inputsEmbeds, not both (idx must be null with inputsEmbeds)');
      if (given.ndim !== 3 || given.shape[2] !== E) throw new ShapeError('GPT', `inputsEmbeds must be [B, T, ${E}], got ${shapeStr(given.shape)}`);
    } else if (!idx || idx.ndim !== 2 || !isIntegral(idx.dtype)) {
      throw new (!idx || idx.ndim !== 2 ? ShapeError : DTypeError)('GPT', `expects token ids [B, T] of an integer dtype, got ${idx ? `${shapeStr(idx.shape)} ${idx.dtype}` : 'null'}`);
    }
    const [B, T] = given ? given.shape : idx!.shape;
    const prefix = opts.prefixEmbeds;
    if (prefix && (prefix.ndim !== 3 || prefix.shape[2] !== E || (prefix.shape[0] !== 1 && prefix.shape[0] !== B))) {
      throw new ShapeError('GPT', `prefixEmbeds must be [1 or ${B}, P, ${E}], got ${shapeStr(prefix.shape)}`);
    }
    const P = prefix ? prefix.shape[1] : 0;
    const past = opts.kvCache?.[0]?.length ?? 0;
    if (opts.kvCache && opts.kvCache.length !== this.config.nLayer) {
      throw new ValueError('GPT', `kvCache must hold one KVCache per layer (${this.config.nLayer}), got ${opts.kvCache.length}`);
    }
    if (past + P + T > this.config.blockSize) {
      throw new ValueError('GPT', `sequence of ${past + P + T} positions${P ? ` (a prefix of ${P})` : ''} is longer than blockSize ${this.config.blockSize}`);
    }
    return tidy(() => {
      const L = P + T;
      const pos = this.wpe.weight.narrow(0, past, L);
      let emb = given ?? this.wte.forward(idx!);
      if (prefix) emb = cat([prefix.shape[0] === B ? prefix : prefix.expand(B, P, E), emb], 1);
      let x = this.drop.forward(emb.add(pos));
      // A single new token may see every cached position: no mask needed.
      const mask = L > 1 ? 'causal' : null;
      let layer = 0;
      for (const block of this.blocks) x = block.forward(x, mask, opts.kvCache?.[layer++]);
      if (opts.lastOnly) x = x.narrow(1, L - 1, 1);
      else if (P) x = x.narrow(1, P, T);
      return this.lnF.forward(x);
    });
  }

  /**
   * Appends maxNewTokens sampled tokens to idx [B, T] and returns the [B, T + maxNewTokens] ids.
   * Runs without gradients and in eval mode (the previous mode is restored). With the cache each step
   * feeds only the new token; once the sequence outgrows blockSize the context is cropped to its last
   * blockSize tokens and rerun each step (positions shift, so the cache no longer applies).
   */
  generate(idx: Tensor, maxNewTokens: number, opts: GenerateOptions = {}): Tensor {
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new ValueError('generate', `maxNewTokens must be a non-negative integer, got ${maxNewTokens}`);
    const wasTraining = this.training;
    this.eval();
    let caches: KVCache[] | null = opts.useCache === false ? null : this.createCache();
    try {
      return noGrad(() => {
        let seq = idx;
        let cached = 0;
        const prefix = opts.prefixEmbeds;
        const room = this.config.blockSize - (prefix ? prefix.shape[1] : 0);
        if (room < 1) throw new ValueError('generate', `the prefix of ${prefix!.shape[1]} positions leaves no room in blockSize ${this.config.blockSize}`);
        for (let step = 0; step < maxNewTokens; step++) {
          const next = tidy(() => {
            const T = seq.shape[1];
            let logits: Tensor;
            if (caches && T <= room) {
              // The prefix goes in with the first call; the cache holds it afterwards.
              logits = this.forward(seq.narrow(1, cached, T - cached), null, { kvCache: caches, lastOnly: true, prefixEmbeds: cached === 0 ? prefix : undefined }).logits;
              cached = T;
            } else {
              caches?.forEach((c) => c.dispose());
              caches = null;
              const context = T > room ? seq.narrow(1, T - room, room) : seq;
              logits = this.forward(context, null, { lastOnly: true, prefixEmbeds: prefix }).logits;
            }
            const last = logits.select(1, 0);
            opts.onLogits?.(last, step);
            return cat([seq, sampleLogits(last, { ...opts, dtype: idx.dtype })], 1);
          });
          if (seq !== idx) seq.dispose();
          seq = next;
        }
        return seq === idx ? idx.clone() : seq;
      });
    } finally {
      caches?.forEach((c) => c.dispose());
      this.train(wasTraining);
    }
  }
}
