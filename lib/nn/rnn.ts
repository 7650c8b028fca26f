// Recurrent layers: RNN (tanh or relu), LSTM and GRU, with PyTorch's semantics, shapes, parameter
// names (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, and _reverse for the backward direction)
// and initialization, so torch state dicts load by name. Variable-length batches take `lengths` with
// pack_padded_sequence's semantics.
//
// Per layer and direction, x W_ih^T for every time step is one product (linear, so autocast applies);
// lib/ops/rnn.ts's recurrence then runs one h W_hh^T product and one fused cell kernel per step and
// records the whole sequence as one autograd node.
import type { Tensor } from '../tensor';
import { ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { tensor } from '../ops/creation';
import { indexSelect } from '../ops/indexing';
import { linear } from '../ops/matmul';
import { dropout as dropoutOp } from '../ops/random';
import { GATE_COUNT, RnnMode, recurrence } from '../ops/rnn';
import { cat, select, stack, squeeze, transpose, unsqueeze } from '../ops/shape';
import { shapeStr } from '../shape';
import { uniform_ } from './init';
import { FactoryOptions, newParameter } from './layers';
import { Module, Parameter } from './module';
import { SequenceClassifier } from './sequence_classifier';
import type { SequenceClassifierOptions } from './sequence_classifier';

/** Options of RNN, LSTM and GRU (torch's constructor arguments in camelCase). */
export interface RNNBaseOptions extends FactoryOptions {
  /** Stacked recurrent layers; each takes the previous one's output sequence (default 1). */
  numLayers?: number;
  /** Learn the biases bias_ih and bias_hh (default true). */
  bias?: boolean;
  /** Inputs and outputs are [batch, seq, feature] instead of [seq, batch, feature] (default false). */
  batchFirst?: boolean;
  /** Dropout probability on each layer's output except the last, in training mode (default 0). */
  dropout?: number;
  /** Run a second direction from the last step to the first and concatenate their outputs (default false). */
  bidirectional?: boolean;
}

/** Options of RNN. */
export interface RNNOptions extends RNNBaseOptions {
  /** The activation of h = act(x W_ih^T + b_ih + h W_hh^T + b_hh) (default 'tanh'). */
  nonlinearity?: 'tanh' | 'relu';
}

/** Options of a recurrent layer's forward. */
export interface RNNForwardOptions {
  /**
   * The length of each batch element's sequence (numbers, or a 1-D integer tensor), like
   * pack_padded_sequence(input, lengths, enforce_sorted=False) then pad_packed_sequence with the
   * input's length: steps past a sequence's length are not run, their outputs are zero, h_n (c_n) is
   * each sequence's state after its last step, and the reverse direction starts at each sequence's
   * own last element. Each length is in [1, seq length]; batched input only.
   */
  lengths?: readonly number[] | Tensor;
}

/** The result of a recurrent layer over packed batches: the sequence and the final states, in sorted order. */
interface Run {
  output: Tensor;
  h: Tensor;
  c: Tensor | null;
}

function checkCount(op: string, name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new ValueError(op, `${name} must be an integer >= ${min}, got ${v}`);
}

/**
 * The common part of RNN, LSTM and GRU (torch.nn.RNNBase): the parameters, named and initialized like
 * PyTorch's, and the layer-by-layer forward. Use one of the three subclasses.
 */
export class RNNBase extends Module {
  /** Features of each input step. */
  readonly inputSize: number;
  /** Features of the hidden state (and of each direction's output). */
  readonly hiddenSize: number;
  /** Stacked layers. */
  readonly numLayers: number;
  /** Whether the layers have biases. */
  readonly bias: boolean;
  /** Whether input and output are [batch, seq, feature]. */
  readonly batchFirst: boolean;
  /** Dropout probability between layers (training mode only). */
  readonly dropout: number;
  /** Whether each layer runs in both directions. */
  readonly bidirectional: boolean;
  readonly #mode: RnnMode;
  readonly #weights: Array<[string, Parameter]> = [];

  /** @internal Made by RNN, LSTM and GRU. */
  constructor(mode: RnnMode, inputSize: number, hiddenSize: number, opts: RNNBaseOptions) {
    super();
    const op = this.constructor.name;
    checkCount(op, 'inputSize', inputSize, 1);
    checkCount(op, 'hiddenSize', hiddenSize, 1);
    checkCount(op, 'numLayers', opts.numLayers ?? 1, 1);
    const p = opts.dropout ?? 0;
    if (typeof p !== 'number' || !(p >= 0 && p <= 1)) throw new ValueError(op, `dropout must be in [0, 1], got ${p}`);
    this.#mode = mode;
    this.inputSize = inputSize;
    this.hiddenSize = hiddenSize;
    this.numLayers = opts.numLayers ?? 1;
    this.bias = opts.bias ?? true;
    this.batchFirst = opts.batchFirst ?? false;
    this.dropout = p;
    this.bidirectional = opts.bidirectional ?? false;
    // torch's order and names; every tensor U(-1/sqrt(H), 1/sqrt(H)).
    const G = GATE_COUNT[mode] * hiddenSize, k = 1 / Math.sqrt(hiddenSize);
    const init = (t: Tensor) => uniform_(t, -k, k);
    for (let l = 0; l < this.numLayers; l++) {
      for (const suffix of this.bidirectional ? ['', '_reverse'] : ['']) {
        const inF = l === 0 ? inputSize : hiddenSize * this.numDirections;
        const add = (name: string, shape: number[]) => this.#weights.push([`${name}_l${l}${suffix}`, newParameter(shape, opts, init)]);
        add('weight_ih', [G, inF]);
        add('weight_hh', [G, hiddenSize]);
        if (this.bias) {
          add('bias_ih', [G]);
          add('bias_hh', [G]);
        }
      }
    }
  }

  /** 2 when bidirectional, else 1. */
  get numDirections(): number {
    return this.bidirectional ? 2 : 1;
  }

  /**
   * A SequenceClassifier over this layer: embeddings in, each row's final state (default 'last': per
   * direction, so both halves of a bidirectional layer have read the whole row) through a new Linear
   * head to numLabels logits.
   */
  withHead<M extends RNN | LSTM | GRU>(this: M, opts: SequenceClassifierOptions): SequenceClassifier<M> {
    return new SequenceClassifier(this, opts);
  }

  /**
   * The parameters of each layer and direction (layer 0 forward, layer 0 reverse, layer 1 forward,
   * ...): [weight_ih, weight_hh] then, with bias, [bias_ih, bias_hh] (torch's all_weights).
   */
  get allWeights(): Parameter[][] {
    const per = this.bias ? 4 : 2;
    const out: Parameter[][] = [];
    for (let i = 0; i < this.#weights.length; i += per) out.push(this.#weights.slice(i, i + per).map(([, p]) => p));
    return out;
  }

  /** The parameters under torch's names (weight_ih_l0, ..., bias_hh_l1_reverse), in torch's order. */
  protected override ownParameters(): Array<[string, Parameter]> {
    return [...this.#weights];
  }

  override extraRepr(): string {
    const opts = [
      this.numLayers !== 1 && `numLayers=${this.numLayers}`,
      !this.bias && 'bias=false',
      this.batchFirst && 'batchFirst=true',
      this.dropout !== 0 && `dropout=${this.dropout}`,
      this.bidirectional && 'bidirectional=true',
    ].filter(Boolean);
    return [`${this.inputSize}, ${this.hiddenSize}`, ...opts].join(', ');
  }

  /**
   * @internal Runs the layers over input ([T, B, inputSize], [B, T, inputSize] with batchFirst, or
   * unbatched [T, inputSize]) from the initial states h0 / c0 ([numLayers * numDirections, B, H], or
   * without the batch dim; null: zeros). Returns the output and the final states in the input's layout.
   */
  protected run(input: Tensor, h0: Tensor | null, c0: Tensor | null, opts: RNNForwardOptions): Run {
    const op = this.constructor.name;
    input._check(op);
    if ((input.ndim !== 2 && input.ndim !== 3) || input.shape[input.ndim - 1] !== this.inputSize) {
      const layout = this.batchFirst ? 'batch, seq' : 'seq, batch';
      throw new ShapeError(op, `expects input [${layout}, ${this.inputSize}] or unbatched [seq, ${this.inputSize}], got ${shapeStr(input.shape)}`);
    }
    const batched = input.ndim === 3;
    if (!batched && opts.lengths !== undefined) throw new ValueError(op, 'lengths needs a batched input');
    const T = input.shape[batched && this.batchFirst ? 1 : 0];
    const B = batched ? input.shape[this.batchFirst ? 0 : 1] : 1;
    const LD = this.numLayers * this.numDirections, H = this.hiddenSize;
    for (const [name, s] of [['h0', h0], ['c0', c0]] as const) {
      if (s && (s.ndim !== (batched ? 3 : 2) || s.shape[0] !== LD || (batched && s.shape[1] !== B) || s.shape[s.ndim - 1] !== H)) {
        throw new ShapeError(op, `initial state ${name} must have shape ${shapeStr(batched ? [LD, B, H] : [LD, H])}, got ${shapeStr(s.shape)}`);
      }
    }
    const lengths = opts.lengths === undefined ? null : readLengths(op, opts.lengths, B, T);
    return tidy(() => {
      // [T, B, features] throughout; batch rows sorted by decreasing length when lengths are given.
      let x = batched ? (this.batchFirst ? transpose(input, 0, 1) : input) : unsqueeze(input, 1);
      let s0 = batched ? [h0, c0] : [h0, c0].map((s) => s && unsqueeze(s, 1));
      const order = lengths && sortOrder(lengths);
      const orderT = order && tensor(order, { dtype: 'int64', device: input.device });
      if (orderT) {
        x = indexSelect(x, 1, orderT);
        s0 = s0.map((s) => s && indexSelect(s, 1, orderT));
      }
      const sorted = order ? order.map((i) => lengths![i]) : lengths;
      const batchSizes = sorted && Array.from({ length: T }, (_, t) => sorted.filter((n) => n > t).length);
      const hs: Tensor[] = [], cs: Tensor[] = [];
      const params = this.allWeights;
      for (let l = 0; l < this.numLayers; l++) {
        const outs: Tensor[] = [];
        for (let d = 0; d < this.numDirections; d++) {
          const i = l * this.numDirections + d;
          const [wIh, wHh, bIh, bHh] = params[i];
          // The GRU's b_hh stays in the recurrence (r scales it); the others add it to the input side.
          const gru = this.#mode === 'gru';
          const b = !this.bias ? null : gru ? bIh : bIh.add(bHh);
          const r = recurrence(this.#mode, linear(x, wIh, b), wHh, gru && this.bias ? bHh : null,
            s0[0] && select(s0[0], 0, i), s0[1] && select(s0[1], 0, i), batchSizes, d === 1);
          outs.push(r.output);
          hs.push(r.h);
          if (r.c) cs.push(r.c);
        }
        x = outs.length > 1 ? cat(outs, 2) : outs[0];
        if (this.dropout > 0 && this.training && l < this.numLayers - 1) x = dropoutOp(x, this.dropout, true);
      }
      let h = stack(hs, 0), c = cs.length ? stack(cs, 0) : null;
      if (order) {
        const inverse = new Array<number>(B);
        order.forEach((b, i) => (inverse[b] = i));
        const inv = tensor(inverse, { dtype: 'int64', device: input.device });
        x = indexSelect(x, 1, inv);
        h = indexSelect(h, 1, inv);
        c = c && indexSelect(c, 1, inv);
      }
      if (!batched) return { output: squeeze(x, 1), h: squeeze(h, 1), c: c && squeeze(c, 1) };
      return { output: this.batchFirst ? transpose(x, 0, 1) : x, h, c };
    });
  }
}

/** lengths as numbers, each an integer in [1, T], one per batch element. */
function readLengths(op: string, lengths: readonly number[] | Tensor, B: number, T: number): number[] {
  let ls: number[];
  if (Array.isArray(lengths)) ls = [...lengths];
  else {
    const t = lengths as Tensor;
    if (t.ndim !== 1 || (t.dtype !== 'int32' && t.dtype !== 'int64')) {
      throw new ValueError(op, `lengths must be a 1-D int32 or int64 tensor, got ${t.dtype} of shape ${shapeStr(t.shape)}`);
    }
    ls = Array.from(t.dataSync() as ArrayLike<number | bigint>, Number);
  }
  if (ls.length !== B) throw new ValueError(op, `lengths has ${ls.length} entries for a batch of ${B}`);
  const bad = ls.find((n) => !Number.isInteger(n) || n < 1 || n > T);
  if (bad !== undefined) throw new ValueError(op, `each length must be an integer in [1, ${T}] (the sequence length), got ${bad}`);
  return ls;
}

/** The batch rows by decreasing length (ties in batch order), or null when they already are. */
function sortOrder(lengths: readonly number[]): number[] | null {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b);
  return order.every((b, i) => b === i) ? null : order;
}

/**
 * An Elman RNN (torch.nn.RNN): per layer h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) with
 * act tanh or relu. forward(input, h0?) returns [output, h_n]: output [T, B, numDirections * H]
 * ([B, T, ...] with batchFirst), h_n [numLayers * numDirections, B, H].
 */
export class RNN extends RNNBase {
  /** The activation. */
  readonly nonlinearity: 'tanh' | 'relu';
  /** An RNN from inputSize features to hiddenSize (see RNNOptions). */
  constructor(inputSize: number, hiddenSize: number, opts: RNNOptions = {}) {
    const nl = opts.nonlinearity ?? 'tanh';
    if (nl !== 'tanh' && nl !== 'relu') throw new ValueError('RNN', `nonlinearity must be 'tanh' or 'relu', got ${String(nl)}`);
    super(nl === 'relu' ? 'rnnRelu' : 'rnnTanh', inputSize, hiddenSize, opts);
    this.nonlinearity = nl;
  }
  /** input [T, B, inputSize] (or see RNNBase); h0 [numLayers * numDirections, B, H] or zeros. Returns [output, h_n]. */
  override forward(input: Tensor, h0?: Tensor | null, opts: RNNForwardOptions = {}): [Tensor, Tensor] {
    const r = this.run(input, h0 ?? null, null, opts);
    return [r.output, r.h];
  }
  override extraRepr(): string {
    return super.extraRepr() + (this.nonlinearity === 'relu' ? ", nonlinearity='relu'" : '');
  }
}

/**
 * A long short-term memory layer (torch.nn.LSTM): gates i, f, g, o from x_t W_ih^T + b_ih + h W_hh^T
 * + b_hh, c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t). forward(input, [h0, c0]?) returns
 * [output, [h_n, c_n]]. torch's projSize (weight_hr) is not offered.
 */
export class LSTM extends RNNBase {
  /** An LSTM from inputSize features to hiddenSize (see RNNBaseOptions). */
  constructor(inputSize: number, hiddenSize: number, opts: RNNBaseOptions = {}) {
    super('lstm', inputSize, hiddenSize, opts);
  }
  /**
   * input [T, B, inputSize] (or see RNNBase); hx = [h0, c0], each [numLayers * numDirections, B, H],
   * or zeros. Returns [output, [h_n, c_n]].
   */
  override forward(input: Tensor, hx?: readonly [Tensor, Tensor] | null, opts: RNNForwardOptions = {}): [Tensor, [Tensor, Tensor]] {
    if (hx && (!Array.isArray(hx) || hx.length !== 2)) throw new ValueError('LSTM', 'hx must be [h0, c0]');
    const r = this.run(input, hx?.[0] ?? null, hx?.[1] ?? null, opts);
    return [r.output, [r.h, r.c!]];
  }
}

/**
 * A gated recurrent unit layer (torch.nn.GRU): r, z = sigmoid(x W_i{r,z}^T + b_i{r,z} + h W_h{r,z}^T
 * + b_h{r,z}), n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)), h_t = (1 - z) * n + z * h_{t-1}.
 * forward(input, h0?) returns [output, h_n].
 */
export class GRU extends RNNBase {
  /** A GRU from inputSize features to hiddenSize (see RNNBaseOptions). */
  constructor(inputSize: number, hiddenSize: number, opts: RNNBaseOptions = {}) {
    super('gru', inputSize, hiddenSize, opts);
  }
  /** input [T, B, inputSize] (or see RNNBase); h0 [numLayers * numDirections, B, H] or zeros. Returns [output, h_n]. */
  override forward(input: Tensor, h0?: Tensor | null, opts: RNNForwardOptions = {}): [Tensor, Tensor] {
    const r = this.run(input, h0 ?? null, null, opts);
    return [r.output, r.h];
  }
}
