// Sequence classification with a GPT body (Hugging Face's GPT2ForSequenceClassification): a linear
// head without bias (`score`) on the final hidden state of each row's last real token. Padding-aware:
// a row's last token is the one before its first padding token (padTokenId), or lengths[i] - 1 when
// lengths are given; without either, the last position. The loss is the mean cross-entropy over the
// rows' labels. A soft prompt (prefixEmbeds, prompt tuning's) goes before the tokens and leaves the
// pooled position where it was: the last real token of idx.
import { ValueError } from '../errors';
import { tidy } from '../memory';
import { full, ones, tensor } from '../ops/creation';
import { cat } from '../ops/shape';
import type { Tensor } from '../tensor';
import { GPT } from './gpt';
import type { GPTConfig } from './gpt';
import { normal_ } from './init';
import { Linear } from './layers';
import { Module } from './module';
import { checkLabels, checkLengths, checkNumLabels, classifierOutput, rowsAt } from './sequence_classifier';
import type { SequenceClassifierOutput } from './sequence_classifier';

/** Options of GPTForSequenceClassification. */
export interface SequenceClassificationOptions {
  /** Number of classes. */
  numLabels: number;
  /** The padding token: each row is read at the token before its first one (default: none). */
  padTokenId?: number | null;
}

/** Options of GPTForSequenceClassification.forward. */
export interface SequenceClassificationForwardOptions {
  /** Each row's real length [B], integers in [1, T] (instead of finding the padding token). */
  lengths?: readonly number[];
  /**
   * Embeddings [1 or B, P, nEmbd] placed before the tokens (GPT.forward's prefixEmbeds, e.g. a
   * PromptTuning's soft prompt); the row is still read at its last real token.
   */
  prefixEmbeds?: Tensor;
}

/** A GPT body with a classification head on the last real token of each row. */
export class GPTForSequenceClassification extends Module {
  /** The body (its lmHead is not used). */
  transformer: GPT;
  /** The head [numLabels, nEmbd], without bias. */
  score: Linear;
  /** Number of classes. */
  readonly numLabels: number;
  /** The padding token id, or null. */
  readonly padTokenId: number | null;

  /** A classifier over body (a GPT, e.g. from GPT.fromPretrained), or over a new GPT of config. */
  constructor(body: GPT | GPTConfig, opts: SequenceClassificationOptions) {
    super();
    const op = 'GPTForSequenceClassification';
    const numLabels = opts?.numLabels;
    checkNumLabels(op, numLabels);
    this.transformer = body instanceof GPT ? body : new GPT(body);
    const pad = opts.padTokenId ?? null;
    if (pad !== null && (!Number.isInteger(pad) || pad < 0 || pad >= this.transformer.config.vocabSize)) {
      throw new ValueError(op, `padTokenId must be a token id in [0, ${this.transformer.config.vocabSize}), got ${pad}`);
    }
    this.numLabels = numLabels;
    this.padTokenId = pad;
    const w = this.transformer.wte.weight;
    this.score = new Linear(this.transformer.config.nEmbd, numLabels, { bias: false, dtype: w.dtype, device: w.device });
    normal_(this.score.weight, 0, 0.02);
  }

  /**
   * idx [B, T] -> logits [B, numLabels] from each row's last real token; with labels [B] (class
   * indices) also the mean cross-entropy. opts.lengths [B] gives the real lengths explicitly;
   * opts.prefixEmbeds goes before idx.
   */
  override forward(idx: Tensor, labels?: Tensor | null, opts: SequenceClassificationForwardOptions = {}): SequenceClassifierOutput {
    checkLabels('GPTForSequenceClassification', labels, idx.shape[0]);
    return tidy(() => {
      const h = this.transformer.hiddenStates(idx, { prefixEmbeds: opts.prefixEmbeds }); // [B, T, E]; checks idx
      const last = this.lastPositions(idx, opts.lengths);
      return classifierOutput(this.score.forward(rowsAt(h, last)), labels);
    });
  }

  /**
   * Each row's last real position [B] (int64, on idx's device): lengths - 1, or the position before
   * the first padding token (found on the device: no read back), or T - 1.
   */
  private lastPositions(idx: Tensor, lengths?: readonly number[]): Tensor {
    const op = 'GPTForSequenceClassification';
    const [B, T] = idx.shape;
    if (lengths) {
      checkLengths(op, lengths, B, T);
      return tensor(lengths.map((n) => n - 1), { dtype: 'int64', device: idx.device });
    }
    if (this.padTokenId === null) return full([B], T - 1, { dtype: 'int64', device: idx.device });
    // The first padding token of each row (T when there is none: a padding column is appended).
    const first = cat([idx.eq(this.padTokenId), ones([B, 1], { dtype: 'bool', device: idx.device })], 1).to('int32').argmax(-1);
    // A row that starts with padding has no real token. Checked where the ids are on the host (no
    // device sync on a GPU, where such a row reads its position 0, as Hugging Face's does).
    if (idx.device === 'cpu') {
      const bad = (first.dataSync() as BigInt64Array).indexOf(0n);
      if (bad >= 0) throw new ValueError(op, `row ${bad} starts with the padding token ${this.padTokenId}: it has no real token`);
    }
    return first.sub(1).clamp(0, T - 1);
  }
}
