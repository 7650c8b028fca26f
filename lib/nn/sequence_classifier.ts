// Sequence classification over a body that maps embedded sequences to hidden states (an
// nn.TransformerEncoder, or an RNN / LSTM / GRU; made by their withHead()): each row's hidden
// states are pooled ('last' real position, 'mean' over the real positions, or 'first', CLS-style)
// and a Linear head gives the class logits. Padding comes as lengths (padding at the end) or as a
// key padding mask; the body sees it too (the encoder as srcKeyPaddingMask, a recurrent layer as
// packed lengths, so its final states are each row's own). Also the argument checks and row
// gathering that GPTForSequenceClassification shares.
import { DTypeError, ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { arange, full, tensor } from '../ops/creation';
import { cat } from '../ops/shape';
import { shapeStr } from '../shape';
import type { Tensor } from '../tensor';
import { Linear } from './layers';
import { crossEntropy } from './losses';
import { Module } from './module';
import { GRU, LSTM, RNN, RNNBase } from './rnn';
import { TransformerEncoder } from './transformer';

/**
 * How SequenceClassifier reduces a row's hidden states [T, H] to one vector: 'last' (the last real
 * position; for a recurrent body each direction's final state, so a bidirectional layer's backward
 * half has read the whole row too), 'mean' (over the real positions) or 'first' (position 0, where a
 * CLS-style token sits).
 */
export type Pooling = 'last' | 'mean' | 'first';

/** The bodies SequenceClassifier takes: they map embeddings [B, T, E] to hidden states [B, T, H]. */
export type SequenceBody = TransformerEncoder | RNN | LSTM | GRU;

/** Options of SequenceClassifier (and of TransformerEncoder / RNN / LSTM / GRU withHead). */
export interface SequenceClassifierOptions {
  /** Number of classes. */
  numLabels: number;
  /** The pooling (default 'last' for a recurrent body, 'mean' for a TransformerEncoder). */
  pool?: Pooling;
}

/** Options of SequenceClassifier.forward: which positions are padding (default: none). */
export interface SequenceClassifierForwardOptions {
  /** Each row's real length, an integer in [1, T]; the positions after it are padding. */
  lengths?: readonly number[];
  /**
   * Bool [B, T], true where a position is padding (srcKeyPaddingMask's convention). A recurrent
   * body reads it as lengths, so its padding must be at the end of each row.
   */
  keyPaddingMask?: Tensor | null;
}

/** What a sequence classifier's forward returns. */
export interface SequenceClassifierOutput {
  /** Class logits [B, numLabels]. */
  logits: Tensor;
  /** With labels: the mean cross-entropy, a scalar. */
  loss?: Tensor;
}

/** @internal A ValueError unless n is a positive integer. */
export function checkNumLabels(op: string, n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new ValueError(op, `numLabels must be a positive integer, got ${n}`);
}

/** @internal A ShapeError unless labels (when given) are [B]. */
export function checkLabels(op: string, labels: Tensor | null | undefined, B: number): void {
  if (labels && (labels.ndim !== 1 || labels.shape[0] !== B)) throw new ShapeError(op, `labels must be [${B}], got ${shapeStr(labels.shape)}`);
}

/** @internal A ValueError unless lengths are B integers in [1, T]. */
export function checkLengths(op: string, lengths: readonly number[], B: number, T: number): void {
  if (lengths.length !== B || !lengths.every((n) => Number.isInteger(n) && n >= 1 && n <= T)) {
    throw new ValueError(op, `lengths must be ${B} integers in [1, ${T}] (one per row), got [${lengths.join(', ')}]`);
  }
}

/** @internal h [B, T, H] at each row's position pos [B] (int64) -> [B, H]. */
export function rowsAt(h: Tensor, pos: Tensor): Tensor {
  const [B, T, H] = h.shape;
  return h.reshape(B * T, H).indexSelect(0, arange(0, B * T, T, { dtype: 'int64', device: h.device }).add(pos));
}

/** @internal logits, and with labels the mean cross-entropy. */
export function classifierOutput(logits: Tensor, labels?: Tensor | null): SequenceClassifierOutput {
  return labels ? { logits, loss: crossEntropy(logits, labels) } : { logits };
}

/**
 * A classification head over a sequence body (HF's *ForSequenceClassification for any encoder):
 * forward(x, labels?, { lengths | keyPaddingMask }) runs the body over the embeddings x (in the
 * body's layout: [B, T, E] when it is batchFirst, else [T, B, E]), pools each row's hidden states
 * and maps them to logits [B, numLabels] with a Linear head (with bias).
 */
export class SequenceClassifier<B extends SequenceBody = SequenceBody> extends Module {
  /** The body. */
  body: B;
  /** The head: pooled features -> numLabels. */
  head: Linear;
  /** Number of classes. */
  readonly numLabels: number;
  /** How rows are pooled. */
  readonly pool: Pooling;

  /** A classifier over body (the head starts like a new Linear, on the body's dtype and device). */
  constructor(body: B, opts: SequenceClassifierOptions) {
    super();
    const op = 'SequenceClassifier';
    if (!(body instanceof TransformerEncoder || body instanceof RNNBase)) {
      throw new ValueError(op, `expects a TransformerEncoder, RNN, LSTM or GRU body, got ${(body as object)?.constructor?.name ?? body}`);
    }
    checkNumLabels(op, opts?.numLabels);
    const pool = opts.pool ?? (body instanceof RNNBase ? 'last' : 'mean');
    if (pool !== 'last' && pool !== 'mean' && pool !== 'first') throw new ValueError(op, `pool must be 'last', 'mean' or 'first', got '${pool}'`);
    this.body = body;
    this.numLabels = opts.numLabels;
    this.pool = pool;
    const features = body instanceof RNNBase ? body.hiddenSize * body.numDirections : body.dModel;
    const w = body.parameters()[0];
    this.head = new Linear(features, opts.numLabels, { dtype: w.dtype, device: w.device });
  }

  /** Whether x is [B, T, E] (the body's batchFirst). */
  get batchFirst(): boolean {
    return this.body.batchFirst;
  }

  /**
   * x: embeddings [B, T, E] ([T, B, E] when the body is not batchFirst) -> logits [B, numLabels];
   * with labels [B] (class indices) also the mean cross-entropy. Padding is given by opts.lengths or
   * opts.keyPaddingMask (not both); a row must have a real position.
   */
  override forward(x: Tensor, labels?: Tensor | null, opts: SequenceClassifierForwardOptions = {}): SequenceClassifierOutput {
    const op = 'SequenceClassifier';
    const body = this.body as SequenceBody;
    const bf = body.batchFirst, E = body instanceof RNNBase ? body.inputSize : body.dModel;
    if (x.ndim !== 3 || x.shape[2] !== E) {
      throw new ShapeError(op, `expects x [${bf ? 'B, T' : 'T, B'}, ${E}] (the body's batchFirst is ${bf}), got ${shapeStr(x.shape)}`);
    }
    const [B, T] = bf ? x.shape : [x.shape[1], x.shape[0]];
    checkLabels(op, labels, B);
    const { lengths, keyPaddingMask: kpm } = opts;
    if (lengths && kpm) throw new ValueError(op, 'pass lengths or keyPaddingMask, not both');
    if (lengths) checkLengths(op, lengths, B, T);
    if (kpm) checkPaddingMask(op, kpm, B, T);
    return tidy(() => {
      const pad = kpm ?? (lengths ? paddingMask(lengths, T, x.device) : null);
      let h: Tensor;
      let pooled: Tensor | null = null;
      if (body instanceof RNNBase) {
        const ls = lengths ?? (kpm ? lengthsOf(op, kpm) : undefined);
        const [out, state] = body.forward(x, null, ls ? { lengths: ls } : {});
        h = bf ? out : out.transpose(0, 1);
        if (this.pool === 'last') {
          // The last layer's final state per direction (forward, then backward), as output orders them.
          const hn = Array.isArray(state) ? state[0] : state;
          const D = body.numDirections;
          pooled = D === 1 ? hn.select(0, hn.shape[0] - 1) : cat(Array.from({ length: D }, (_, d) => hn.select(0, hn.shape[0] - D + d)), 1);
        }
      } else {
        h = body.forward(x, { srcKeyPaddingMask: pad });
        if (!bf) h = h.transpose(0, 1);
      }
      pooled ??= poolStates(h, this.pool, pad);
      return classifierOutput(this.head.forward(pooled), labels);
    });
  }
}

/** Bool [B, T]: true at positions t >= lengths[b]. */
function paddingMask(lengths: readonly number[], T: number, device: string): Tensor {
  const ls = tensor([...lengths], { dtype: 'int64', device }).unsqueeze(1);
  return arange(0, T, 1, { dtype: 'int64', device }).unsqueeze(0).ge(ls);
}

/**
 * Checks a key padding mask's shape and dtype; where it is on the host, also that every row has a
 * real position (on a GPU that would need a sync: such a row gives NaN there).
 */
function checkPaddingMask(op: string, kpm: Tensor, B: number, T: number): void {
  if (kpm.ndim !== 2 || kpm.shape[0] !== B || kpm.shape[1] !== T) {
    throw new ShapeError(op, `keyPaddingMask must be [${B}, ${T}] (batch, positions), got ${shapeStr(kpm.shape)}`);
  }
  if (kpm.dtype !== 'bool') throw new DTypeError(op, `keyPaddingMask must be bool (true at padding), got ${kpm.dtype}`);
  if (kpm.device !== 'cpu') return;
  const v = kpm.dataSync() as Uint8Array;
  for (let b = 0; b < B; b++) {
    if (v.subarray(b * T, (b + 1) * T).every((p) => p)) throw new ValueError(op, `keyPaddingMask row ${b} is all padding: it has no real position`);
  }
}

/** The lengths a recurrent body needs from a key padding mask whose padding ends each row. */
function lengthsOf(op: string, kpm: Tensor): number[] {
  const [B, T] = kpm.shape;
  const v = kpm.dataSync() as Uint8Array;
  return Array.from({ length: B }, (_, b) => {
    const row = v.subarray(b * T, (b + 1) * T);
    const n = row.indexOf(1) < 0 ? T : row.indexOf(1);
    if (n === 0 || row.subarray(n).some((p) => !p)) {
      throw new ValueError(op, `a recurrent body reads padding at the end of a row only: keyPaddingMask row ${b} has a real position after padding or none`);
    }
    return n;
  });
}

/** h [B, T, H] pooled per row to [B, H], ignoring padding (pad: bool [B, T] or null). */
function poolStates(h: Tensor, pool: Pooling, pad: Tensor | null): Tensor {
  const [B, T] = h.shape;
  if (pool === 'first') return h.select(1, 0);
  if (pool === 'mean') {
    if (!pad) return h.mean(1);
    const real = pad.logicalNot();
    return h.maskedFill(pad.unsqueeze(-1), 0).sum(1).div(real.sum(1, true).to(h.dtype));
  }
  if (!pad) return rowsAt(h, full([B], T - 1, { dtype: 'int64', device: h.device }));
  // The last real position: the largest (t + 1) over real positions, found on the device.
  const last = pad.logicalNot().to('int32').mul(arange(1, T + 1, 1, { dtype: 'int32', device: h.device })).argmax(-1);
  return rowsAt(h, last);
}
