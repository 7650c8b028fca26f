// Prompt tuning (Lester et al. 2021, PEFT's PROMPT_TUNING for causal LMs): numVirtualTokens learned
// embeddings are placed before every input of a frozen GPT (forward's prefixEmbeds), and only they
// train. Initialized from the embeddings of given token ids (the text of a task description, as
// PEFT's TEXT init) or at random with the embedding's scale.
import { noGrad } from '../autograd/grad_mode';
import { ValueError } from '../errors';
import { tidy } from '../memory';
import { tensor, zeros } from '../ops/creation';
import type { Tensor } from '../tensor';
import { GPT } from './gpt';
import type { GenerateOptions } from './gpt';
import { normal_ } from './init';
import { Module, Parameter } from './module';

/** Options of PromptTuning. */
export interface PromptTuningOptions {
  /** Soft-prompt length P (default: the length of initTokens, else 8). */
  numVirtualTokens?: number;
  /** Token ids whose embeddings start the prompt (cycled to P); default: random, std 0.02. */
  initTokens?: number[];
}

/**
 * A learned soft prompt in front of a frozen GPT: forward(idx, targets) and generate(idx, n) run the
 * model with the prompt's embeddings before idx. The GPT's parameters are frozen when it is made;
 * `prompt` is the one trainable parameter (this module's parameters() are the GPT's and the prompt;
 * give the optimizer `[tuning.prompt]`).
 */
export class PromptTuning extends Module {
  /** The frozen model. */
  readonly model: GPT;
  /** The soft prompt [P, nEmbd]. */
  prompt: Parameter;

  constructor(model: GPT, opts: PromptTuningOptions = {}) {
    super();
    const op = 'PromptTuning';
    if (!(model instanceof GPT)) throw new ValueError(op, 'expected an nn.GPT');
    const init = opts.initTokens;
    const P = opts.numVirtualTokens ?? init?.length ?? 8;
    if (!Number.isInteger(P) || P < 1 || P >= model.config.blockSize) {
      throw new ValueError(op, `numVirtualTokens must be an integer in [1, ${model.config.blockSize - 1}] (below blockSize), got ${P}`);
    }
    if (init && (!init.length || !init.every((i) => Number.isInteger(i) && i >= 0 && i < model.config.vocabSize))) {
      throw new ValueError(op, `initTokens must be token ids in [0, ${model.config.vocabSize})`);
    }
    this.model = model;
    for (const p of model.parameters()) p.requiresGrad = false;
    const w = model.wte.weight;
    const start = noGrad(() => tidy(() => {
      if (!init) return normal_(zeros([P, model.config.nEmbd], { dtype: w.dtype, device: w.device }), 0, 0.02);
      const ids = tensor(Array.from({ length: P }, (_, i) => init[i % init.length]), { dtype: 'int64', device: w.device });
      return model.wte.forward(ids).clone();
    }));
    this.prompt = new Parameter(start);
  }

  /** The model's forward with the soft prompt before idx [B, T]; logits and loss cover idx's positions. */
  override forward(idx: Tensor, targets?: Tensor | null): ReturnType<GPT['forward']> {
    return this.model.forward(idx, targets, { prefixEmbeds: this.prompt.unsqueeze(0) });
  }

  /** The model's generate with the soft prompt before idx. */
  generate(idx: Tensor, maxNewTokens: number, opts: GenerateOptions = {}): Tensor {
    return tidy(() => this.model.generate(idx, maxNewTokens, { ...opts, prefixEmbeds: this.prompt.detach().unsqueeze(0) }));
  }
}
