// Sequence classification with a GPT body (Hugging Face's GPT2ForSequenceClassification): a linear
// head without bias (`score`) on the final hidden state of each row's last real token. Padding-aware:
// a row's last token is the one before its first padding token (padTokenId), or lengths[i] - 1 when
// lengths are given; without either, the last position. The loss is the mean cross-entropy over the
// rows' labels.
import { ValueError, ShapeError } from '../errors';
import { tidy } from '../memory';
import { tensor } from '../ops/creation';
import { shapeStr } from '../shape';
import type { Tensor } from '../tensor';
import { GPT } from './gpt';
import type { GPTConfig } from './gpt';
import { normal_ } from './init';
import { Linear } from './layers';
import { crossEntropy } from './losses';
import { Module } from './module';

/** Options of GPTForSequenceClassification. */
export interface SequenceClassificationOptions {
  /** Number of classes. */
  numLabels: number;
  /** The padding token: each row is read at the token before its first one (default: none). */
  padTokenId?: number | null;
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
    if (!Number.isInteger(numLabels) || numLabels < 1) throw new ValueError(op, `numLabels must be a positive integer, got ${numLabels}`);
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
   * indices) also the mean cross-entropy. opts.lengths [B] gives the real lengths explicitly.
   */
  override forward(idx: Tensor, labels?: Tensor | null, opts: { lengths?: number[] } = {}): {
    /** Class logits [B, numLabels]. */
    logits: Tensor;
    /** With labels: the mean cross-entropy, a scalar. */
    loss?: Tensor;
  } {
    const op = 'GPTForSequenceClassification';
    const [B, T] = idx.shape;
    if (labels && (labels.ndim !== 1 || labels.shape[0] !== B)) throw new ShapeError(op, `labels must be [${B}], got ${shapeStr(labels.shape)}`);
    const last = this.lastPositions(idx, opts.lengths);
    return tidy(() => {
      const h = this.transformer.hiddenStates(idx);                          // [B, T, E]
      const E = h.shape[2];
      const at = tensor(last.map((t, b) => b * T + t), { dtype: 'int64', device: h.device });
      const pooled = h.reshape(B * T, E).indexSelect(0, at);               // [B, E]
      const logits = this.score.forward(pooled);
      return labels ? { logits, loss: crossEntropy(logits, labels) } : { logits };
    });
  }

  /** Each row's last real position: lengths - 1, or before the first padding token, or T - 1. */
  private lastPositions(idx: Tensor, lengths?: number[]): number[] {
    const op = 'GPTForSequenceClassification';
    const [B, T] = idx.shape;
    if (lengths) {
      if (lengths.length !== B || !lengths.every((n) => Number.isInteger(n) && n >= 1 && n <= T)) {
        throw new ValueError(op, `lengths must be ${B} integers in [1, ${T}]`);
      }
      return lengths.map((n) => n - 1);
    }
    if (this.padTokenId === null) return new Array(B).fill(T - 1);
    const ids = Array.from(idx.dataSync() as ArrayLike<number | bigint>, Number);
    return Array.from({ length: B }, (_, b) => {
      const row = ids.slice(b * T, (b + 1) * T);
      const first = row.indexOf(this.padTokenId!);
      if (first === 0) throw new ValueError(op, `row ${b} starts with the padding token ${this.padTokenId}: it has no real token`);
      return first < 0 ? T - 1 : first - 1;
    });
  }
}
