// Prompt tuning (Lester et al. 2021, PEFT's PROMPT_TUNING): numVirtualTokens learned embeddings are
// placed before every input of a frozen model, and only they train. The model is a GPT (the prompt
// goes before the tokens: forward's prefixEmbeds), a GPTForSequenceClassification (the same, and its
// `score` head trains too, as PEFT keeps a classifier's head in modules_to_save), or an encoder-
// decoder nn.Transformer (the prompt goes before the embedded source; the decoder sees it in the
// memory). Initialized from the embeddings of given token ids (the text of a task description, as
// PEFT's TEXT init), from given vectors, or at random with GPT-2's embedding scale (std 0.02).
import { noGrad } from '../autograd/grad_mode';
import { ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { full, tensor, zeros } from '../ops/creation';
import { cat } from '../ops/shape';
import { shapeStr } from '../shape';
import type { Tensor } from '../tensor';
import { GPT } from './gpt';
import type { GenerateOptions } from './gpt';
import { GPTForSequenceClassification } from './gpt_classify';
import { normal_ } from './init';
import { Module, Parameter } from './module';
import type { SequenceClassifierOutput } from './sequence_classifier';
import { Transformer } from './transformer';
import type { TransformerForwardOptions } from './transformer';

/** Options of PromptTuning. */
export interface PromptTuningOptions {
  /** Soft-prompt length P (default: the length of initTokens or initEmbeds, else 8). */
  numVirtualTokens?: number;
  /**
   * Token ids whose embeddings start the prompt (cycled to P); a GPT or GPT classifier only (an
   * nn.Transformer has no token embedding). Default: random, std 0.02.
   */
  initTokens?: number[];
  /** Vectors [P, E] the prompt starts from (copied), instead of initTokens. */
  initEmbeds?: Tensor;
}

/** The models PromptTuning wraps. */
export type PromptTunable = GPT | GPTForSequenceClassification | Transformer;

/** PromptTuning.forward's signature for a model M: the model's own, without the prompt option. */
export type PromptTuningForward<M extends PromptTunable> = M extends GPT
  ? (idx: Tensor, targets?: Tensor | null) => ReturnType<GPT['forward']>
  : M extends GPTForSequenceClassification
    ? (idx: Tensor, labels?: Tensor | null, opts?: { lengths?: readonly number[] }) => SequenceClassifierOutput
    : M extends Transformer
      ? (src: Tensor, tgt: Tensor, opts?: TransformerForwardOptions) => Tensor
      : never;

/**
 * A learned soft prompt in front of a frozen model. forward takes the model's arguments:
 * (idx, targets) for a GPT, (idx, labels, { lengths }) for a GPTForSequenceClassification, (src,
 * tgt, masks) for an nn.Transformer; generate(idx, n) runs a GPT's generation with the prompt. The
 * model's parameters are frozen when this is made, except a classifier's `score` head; `prompt` is
 * trainable. parameters() lists the model's too: train trainableParameters() (the same as
 * parameters().filter(p => p.requiresGrad)). stateDict() keys are `prompt` and `model.<the model's
 * keys>`.
 */
export class PromptTuning<M extends PromptTunable = PromptTunable> extends Module {
  /** The frozen model. */
  readonly model: M;
  /** The soft prompt [P, E] (E: the model's width). */
  prompt: Parameter;

  constructor(model: M, opts: PromptTuningOptions = {}) {
    super();
    const op = 'PromptTuning';
    const gpt = model instanceof GPT ? model : model instanceof GPTForSequenceClassification ? model.transformer : null;
    if (!gpt && !(model instanceof Transformer)) {
      throw new ValueError(op, `expects an nn.GPT, nn.GPTForSequenceClassification or nn.Transformer, got ${(model as object)?.constructor?.name ?? model}`);
    }
    const { initTokens: init, initEmbeds } = opts;
    if (init && initEmbeds) throw new ValueError(op, 'pass initTokens or initEmbeds, not both');
    if (init && !gpt) throw new ValueError(op, 'initTokens needs a GPT (an nn.Transformer has no token embedding): pass initEmbeds [P, dModel]');
    const E = gpt ? gpt.config.nEmbd : (model as Transformer).dModel;
    const P = opts.numVirtualTokens ?? init?.length ?? initEmbeds?.shape[0] ?? 8;
    const maxP = gpt ? gpt.config.blockSize - 1 : Infinity;
    if (!Number.isInteger(P) || P < 1 || P > maxP) {
      throw new ValueError(op, `numVirtualTokens must be an integer in [1, ${maxP}]${gpt ? ' (below blockSize)' : ''}, got ${P}`);
    }
    if (init && (!init.length || !init.every((i) => Number.isInteger(i) && i >= 0 && i < gpt!.config.vocabSize))) {
      throw new ValueError(op, `initTokens must be token ids in [0, ${gpt!.config.vocabSize})`);
    }
    if (initEmbeds && (initEmbeds.ndim !== 2 || initEmbeds.shape[0] !== P || initEmbeds.shape[1] !== E)) {
      throw new ShapeError(op, `initEmbeds must be [${P}, ${E}] (numVirtualTokens, model width), got ${shapeStr(initEmbeds.shape)}`);
    }
    this.model = model;
    model.freeze();
    if (model instanceof GPTForSequenceClassification) model.score.unfreeze();
    const w = gpt ? gpt.wte.weight : model.parameters()[0];
    const start = noGrad(() => tidy(() => {
      if (initEmbeds) return initEmbeds.to({ dtype: w.dtype, device: w.device }).clone();
      if (!init) return normal_(zeros([P, E], { dtype: w.dtype, device: w.device }), 0, 0.02);
      const ids = tensor(Array.from({ length: P }, (_, i) => init[i % init.length]), { dtype: 'int64', device: w.device });
      return gpt!.wte.forward(ids).clone();
    }));
    this.prompt = Parameter.own(start);
  }

  /** The number of virtual tokens P. */
  get numVirtualTokens(): number {
    return this.prompt.shape[0];
  }

  /** The parameters that train: the prompt, and a classifier's score head. */
  trainableParameters(): Parameter[] {
    return this.parameters().filter((p) => p.requiresGrad);
  }

  /**
   * The model's forward with the soft prompt before its input. GPT: logits and loss cover idx's
   * positions. Classifier: rows are read at idx's last real token. Transformer: see
   * transformerForward.
   */
  override forward(...args: Parameters<PromptTuningForward<M>>): ReturnType<PromptTuningForward<M>> {
    const m: PromptTunable = this.model;
    if (m instanceof Transformer) {
      const [src, tgt, opts] = args as Parameters<PromptTuningForward<Transformer>>;
      return this.transformerForward(m, src, tgt, opts) as ReturnType<PromptTuningForward<M>>;
    }
    return tidy(() => {
      const prefixEmbeds = this.prompt.unsqueeze(0);
      if (m instanceof GPT) {
        const [idx, targets] = args as Parameters<PromptTuningForward<GPT>>;
        return m.forward(idx, targets, { prefixEmbeds });
      }
      const [idx, labels, opts] = args as Parameters<PromptTuningForward<GPTForSequenceClassification>>;
      return m.forward(idx, labels, { lengths: opts?.lengths, prefixEmbeds });
    }) as ReturnType<PromptTuningForward<M>>;
  }

  /**
   * A GPT's generate with the soft prompt before idx (a ValueError for another model): appends
   * maxNewTokens tokens to idx [B, T].
   */
  generate(idx: Tensor, maxNewTokens: number, opts: GenerateOptions = {}): Tensor {
    const m: PromptTunable = this.model;
    if (!(m instanceof GPT)) throw new ValueError('PromptTuning.generate', `needs an nn.GPT model, got ${m.constructor.name}`);
    return tidy(() => m.generate(idx, maxNewTokens, { ...opts, prefixEmbeds: this.prompt.detach().unsqueeze(0) }));
  }

  /**
   * The encoder-decoder with the prompt before src ([B, S, E], [S, B, E] when not batchFirst), so
   * the encoder and the decoder's memory have P + S positions. The masks are widened to match: every
   * position sees the prompt (srcKeyPaddingMask, memoryKeyPaddingMask and memoryMask get P open
   * columns first); srcMask also gets P rows in which the prompt sees only the prompt, so it carries
   * nothing between source positions that srcMask keeps apart. srcIsCausal makes the prompt the
   * start of the causal order.
   */
  private transformerForward(m: Transformer, src: Tensor, tgt: Tensor, opts: TransformerForwardOptions = {}): Tensor {
    const op = 'PromptTuning';
    const bf = m.batchFirst, E = m.dModel, P = this.numVirtualTokens;
    if (src.ndim !== 3 || src.shape[2] !== E) {
      throw new ShapeError(op, `expects src [${bf ? 'B, S' : 'S, B'}, ${E}] (batchFirst ${bf}), got ${shapeStr(src.shape)}`);
    }
    const [B, S] = bf ? src.shape : [src.shape[1], src.shape[0]];
    const check = (name: string, mask: Tensor | null | undefined, want: string, ok: (s: readonly number[]) => boolean) => {
      if (mask && (mask.ndim < 2 || !ok(mask.shape))) throw new ShapeError(op, `${name} must be ${want} for src ${shapeStr(src.shape)}, got ${shapeStr(mask.shape)}`);
    };
    check('srcKeyPaddingMask', opts.srcKeyPaddingMask, `[${B}, ${S}]`, (s) => s.length === 2 && s[0] === B && s[1] === S);
    check('memoryKeyPaddingMask', opts.memoryKeyPaddingMask, `[${B}, ${S}]`, (s) => s.length === 2 && s[0] === B && s[1] === S);
    check('srcMask', opts.srcMask, `[..., ${S}, ${S}]`, (s) => s.at(-1) === S && s.at(-2) === S);
    check('memoryMask', opts.memoryMask, `[..., T, ${S}]`, (s) => s.at(-1) === S);
    return tidy(() => {
      const prompt = bf ? this.prompt.unsqueeze(0).expand(B, P, E) : this.prompt.unsqueeze(1).expand(P, B, E);
      const widened = (mask: Tensor | null | undefined) => mask && openColumns(mask, P);
      return m.forward(cat([prompt, src], bf ? 1 : 0), tgt, {
        ...opts,
        srcMask: opts.srcMask && promptRows(openColumns(opts.srcMask, P), P),
        srcKeyPaddingMask: widened(opts.srcKeyPaddingMask),
        memoryKeyPaddingMask: widened(opts.memoryKeyPaddingMask),
        memoryMask: widened(opts.memoryMask),
      });
    });
  }
}

/** mask [..., L, S] -> [..., L, P + S]: P open columns first (false, or 0 for an additive mask). */
function openColumns(mask: Tensor, P: number): Tensor {
  const lead = mask.shape.slice(0, -1);
  return cat([zeros([...lead, P], { dtype: mask.dtype, device: mask.device }), mask], -1);
}

/**
 * mask [..., S, P + S] -> [..., P + S, P + S]: P rows first that see the first P columns only (the
 * rest blocked: true, or -Infinity for an additive mask).
 */
function promptRows(mask: Tensor, P: number): Tensor {
  const lead = mask.shape.slice(0, -2), S = mask.shape[mask.ndim - 1] - P;
  const opts = { dtype: mask.dtype, device: mask.device };
  const rows = cat([zeros([...lead, P, P], opts), full([...lead, P, S], mask.dtype === 'bool' ? 1 : -Infinity, opts)], -1);
  return cat([rows, mask], -2);
}
