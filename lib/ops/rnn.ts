// Recurrent ops: the fused RNN, LSTM and GRU cells (one native kernel per time step, forward and
// backward; native/ops/rnn.h), and the recurrence that runs a cell over a whole sequence for
// nn.RNN / nn.LSTM / nn.GRU.
//
// Why a recurrence op and not one recorded cell per step: the input side of every step's gates,
// x W_ih^T, is one product over all time steps (lib/nn/rnn.ts), and taking step t out of it with a
// recorded view would cost a gradient the size of the whole sequence per step in backward (O(T^2)).
// The recurrence records one node for the sequence instead: its forward runs per step one h W_hh^T
// product and one fused cell kernel, saving the states; its backward walks the steps in reverse with
// the fused backward kernels, writing the gates' gradients of all steps into one tensor, and takes
// W_hh's gradient as one product at the end.
//
// Dtypes: the cells' pointwise arithmetic and the states are in autocast's 'float32' category (a
// cell state summed in bfloat16 over many steps drifts); the per-step products go through kiln's
// linear and matmul, so autocast applies to them.
import { recordOp } from '../autograd/engine';
import { noGrad } from '../autograd/grad_mode';
import { DeviceError, DTypeError, ShapeError, ValueError } from '../errors';
import { tidy } from '../memory';
import { shapeStr } from '../shape';
import { Tensor, emptyTensor } from '../tensor';
import { contiguousCopy, copy_, fill_, to, zeros } from './creation';
import { bindKernels, defineOp, fillOutputs } from './dispatch';
import { linear, matmul } from './matmul';
import { sum } from './reduce';
import { contiguous, narrow, select, transpose } from './shape';
import { checkFloating } from './softmax';

const K = bindKernels('rnn', {
  rnnCellForward: '(xg:T, hg:T, relu:b, h:T) -> void',
  rnnCellBackward: '(dh:T, dy:T?, h:T, relu:b, dpre:T) -> void',
  lstmCellForward: '(xg:T, hg:T, cPrev:T, h:T, c:T, act:T) -> void',
  lstmCellBackward: '(dh:T, dy:T?, dc:T?, act:T, cPrev:T, c:T, dgates:T, dcPrev:T?) -> void',
  gruCellForward: '(xg:T, hg:T, hPrev:T, h:T, act:T) -> void',
  gruCellBackward: '(dh:T, dy:T?, act:T, hPrev:T, dxg:T, dhg:T, dhPrev:T?) -> void',
});
const KERNELS = Object.keys(K);

/** @internal The recurrent cell kinds, with torch's names of RNN's two nonlinearities. */
export type RnnMode = 'rnnTanh' | 'rnnRelu' | 'lstm' | 'gru';

/** @internal Gate blocks per hidden unit: the rows of W_ih and W_hh are this many times hiddenSize. */
export const GATE_COUNT: Readonly<Record<RnnMode, number>> = { rnnTanh: 1, rnnRelu: 1, lstm: 4, gru: 3 };

// ---- checks ----

function checkTensor(op: string, name: string, t: Tensor, lead: Tensor, shape: readonly number[]): void {
  t._check(op);
  if (t.ndim !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new ShapeError(op, `${name} must have shape ${shapeStr(shape)}, got ${shapeStr(t.shape)}`);
  }
  if (t.dtype !== lead.dtype) throw new DTypeError(op, `${name} dtype ${t.dtype} differs from the gates' dtype ${lead.dtype}`);
  if (t._dev !== lead._dev) throw new DeviceError(op, `${name} is on ${t.device} but the gates are on ${lead.device}`);
}

/** The gates' n and H: xg is [n, gates * H] (or [T, n, gates * H] with sequence) and hg, when given, matches. */
function checkGates(op: string, xg: Tensor, hg: Tensor | null, gates: number, sequence = false): { n: number; H: number } {
  xg._check(op);
  checkFloating(op, xg, 'input gates');
  const want = sequence ? 3 : 2;
  const width = xg.shape[want - 1];
  if (xg.ndim !== want || width % gates !== 0 || width === 0) {
    throw new ShapeError(op, `input gates must have shape [${sequence ? 'T, ' : ''}n, ${gates} * hiddenSize], got ${shapeStr(xg.shape)}`);
  }
  if (hg) checkTensor(op, 'hidden gates', hg, xg, xg.shape);
  return { n: xg.shape[want - 2], H: width / gates };
}

// ---- helpers ----

/** Rows [0, n) of step t of a contiguous [steps, B, W] buffer (or of a [B, W] one with t null), as a view. */
function rows(buf: Tensor, t: number | null, n: number): Tensor {
  const W = buf.shape[buf.ndim - 1];
  const B = buf.shape[buf.ndim - 2];
  return buf._viewAs([n, W], [W, 1], buf.offset + (t ?? 0) * B * W);
}

/** Rows [n, B) of step t of a contiguous [steps, B, W] buffer (or of a [B, W] one with t null), as a view. */
function tail(buf: Tensor, t: number | null, n: number): Tensor {
  const W = buf.shape[buf.ndim - 1];
  const B = buf.shape[buf.ndim - 2];
  return buf._viewAs([B - n, W], [W, 1], buf.offset + ((t ?? 0) * B + n) * W);
}

/** g itself when contiguous, else a contiguous copy (the kernels index raw rows). */
function dense(g: Tensor): Tensor {
  return g.isContiguous() ? g : contiguousCopy(g);
}

/** f on contiguous versions of ts (recorded copies where needed, which f's result keeps alive in its graph). */
function withDense<R>(ts: Tensor[], f: (cs: Tensor[]) => R): R {
  const cs = ts.map((t) => contiguous(t));
  try {
    return f(cs);
  } finally {
    cs.forEach((c, i) => c !== ts[i] && c.dispose());
  }
}

// ---- single-step cells ----

type CellArgs = [xg: Tensor, hg: Tensor, state: Tensor | null, relu: boolean];

/**
 * A cell op over gates xg, hg [n, gates * H] and (LSTM, GRU) the previous state [n, H]: the checks and
 * dtype policy the three share. run gets contiguous operands ([xg, hg, state]) and records the op.
 */
function cellOp(name: string, gates: number, stateName: string | null, run: (ts: Tensor[], relu: boolean) => Tensor) {
  return defineOp<CellArgs>({
    name,
    inputs: [0, 1, 2],
    kernels: KERNELS,
    autocast: 'float32',
    check(xg, hg, state) {
      const { n, H } = checkGates(name, xg, hg, gates);
      if (stateName) checkTensor(name, stateName, state!, xg, [n, H]);
    },
    forward: (xg, hg, state, relu) => withDense(state ? [xg, hg, state] : [xg, hg], (ts) => run(ts, relu)),
  });
}

const rnnCellOp = cellOp('rnnCell', 1, null, ([xg, hg], relu) => {
  const h = emptyTensor(xg.shape, xg.dtype, xg._dev);
  fillOutputs([h], () => K.rnnCellForward(xg._h, hg._h, relu, h._h));
  return recordOp('rnnCell', [xg, hg], h, [h], (g, [hs]) => {
    const dpre = emptyTensor(hs.shape, hs.dtype, hs._dev);
    K.rnnCellBackward(dense(g)._h, null, hs._h, relu, dpre._h);
    return [dpre, dpre];
  });
});

/**
 * @internal One RNN step from its gates: h = tanh(xg + hg), or relu with nonlinearity 'relu'. xg = x
 * W_ih^T + b_ih and hg = h W_hh^T + b_hh are [n, H].
 */
export function rnnCell(xg: Tensor, hg: Tensor, nonlinearity: 'tanh' | 'relu' = 'tanh'): Tensor {
  return rnnCellOp(xg, hg, null, nonlinearity === 'relu');
}

// One tensor [2, n, H] holding h and c: a recorded op has one output; lstmCell splits it.
const lstmCellOp = cellOp('lstmCell', 4, 'cell state', ([xg, hg, cPrev]) => {
  const [n, H] = cPrev.shape;
  const out = emptyTensor([2, n, H], xg.dtype, xg._dev);
  const act = emptyTensor([n, 4 * H], xg.dtype, xg._dev);
  const h = rows(out, 0, n), c = rows(out, 1, n);
  fillOutputs([h, c, out, act], () => K.lstmCellForward(xg._h, hg._h, cPrev._h, h._h, c._h, act._h));
  h.dispose();
  const res = recordOp('lstmCell', [xg, hg, cPrev], out, [act, cPrev, c], (g, [a, cp, cs], needs) => {
    const gd = dense(g);
    const dgates = emptyTensor([n, 4 * H], a.dtype, a._dev);
    const dcPrev = needs[2] ? emptyTensor([n, H], a.dtype, a._dev) : null;
    K.lstmCellBackward(rows(gd, 0, n)._h, null, rows(gd, 1, n)._h, a._h, cp._h, cs._h, dgates._h, dcPrev?._h ?? null);
    return [dgates, dgates, dcPrev];
  });
  act.dispose();
  c.dispose();
  return res;
});

/**
 * @internal One LSTM step from its gates: xg = x W_ih^T + b_ih and hg = h W_hh^T + b_hh are [n, 4H]
 * (blocks i, f, g, o); c is the previous cell state [n, H]. Returns [h, c] of the step.
 */
export function lstmCell(xg: Tensor, hg: Tensor, c: Tensor): [Tensor, Tensor] {
  const out = lstmCellOp(xg, hg, c, false);
  const res: [Tensor, Tensor] = [select(out, 0, 0), select(out, 0, 1)];
  out.dispose();
  return res;
}

const gruCellOp = cellOp('gruCell', 3, 'hidden state', ([xg, hg, hPrev]) => {
  const [n, H] = hPrev.shape;
  const h = emptyTensor([n, H], xg.dtype, xg._dev);
  const act = emptyTensor([n, 4 * H], xg.dtype, xg._dev);
  fillOutputs([h, act], () => K.gruCellForward(xg._h, hg._h, hPrev._h, h._h, act._h));
  const res = recordOp('gruCell', [xg, hg, hPrev], h, [act, hPrev], (g, [a, hp], needs) => {
    const dxg = emptyTensor([n, 3 * H], a.dtype, a._dev);
    const dhg = emptyTensor([n, 3 * H], a.dtype, a._dev);
    const dhPrev = needs[2] ? emptyTensor([n, H], a.dtype, a._dev) : null;
    K.gruCellBackward(dense(g)._h, null, a._h, hp._h, dxg._h, dhg._h, dhPrev?._h ?? null);
    // hPrev reaches h directly (dhPrev) and through hg: the caller's product carries the second part.
    return [dxg, dhg, dhPrev];
  });
  act.dispose();
  return res;
});

/**
 * @internal One GRU step from its gates: xg = x W_ih^T + b_ih and hg = h W_hh^T + b_hh are [n, 3H]
 * (blocks r, z, n), kept apart because r scales only hg's n block; h is the previous state [n, H].
 */
export function gruCell(xg: Tensor, hg: Tensor, h: Tensor): Tensor {
  return gruCellOp(xg, hg, h, false);
}

// ---- whole sequences ----

type RecurrenceArgs = [
  xg: Tensor,
  wHh: Tensor,
  bHh: Tensor | null,
  h0: Tensor | null,
  c0: Tensor | null,
  mode: RnnMode,
  batchSizes: readonly number[] | null,
  reverse: boolean,
];

/** The name errors and the graph give a recurrence. */
function opName(mode: RnnMode): string {
  return mode === 'lstm' || mode === 'gru' ? mode : 'rnn';
}

function checkRecurrence(...[xg, wHh, bHh, h0, c0, mode, batchSizes]: RecurrenceArgs): void {
  const op = opName(mode);
  const gates = GATE_COUNT[mode];
  const { n: B, H } = checkGates(op, xg, null, gates, true);
  const T = xg.shape[0];
  if (T === 0) throw new ShapeError(op, `the sequence has no steps (input gates ${shapeStr(xg.shape)})`);
  checkTensor(op, 'weight_hh', wHh, xg, [gates * H, H]);
  if (bHh && mode !== 'gru') throw new ValueError(op, 'only the GRU takes bias_hh in the recurrence (the others fold it into the input gates)');
  if (bHh) checkTensor(op, 'bias_hh', bHh, xg, [gates * H]);
  if (h0) checkTensor(op, 'initial hidden state', h0, xg, [B, H]);
  if (c0 && mode !== 'lstm') throw new ValueError(op, 'only the LSTM has a cell state');
  if (c0) checkTensor(op, 'initial cell state', c0, xg, [B, H]);
  if (batchSizes) {
    const ok = batchSizes.length === T && batchSizes.every((s, t) => Number.isInteger(s) && s >= 0 && s <= B && (t === 0 || s <= batchSizes[t - 1]));
    if (!ok) throw new ValueError(op, `batchSizes must be ${T} non-increasing integers in [0, ${B}], got [${batchSizes.join(', ')}]`);
  }
}

/** The recurrence's forward: states per step and saved activations, then the packed output. */
function runRecurrence(...[xgIn, wHh, bHh, h0, c0, mode, batchSizes, reverse]: RecurrenceArgs): Tensor {
  const lstm = mode === 'lstm', gru = mode === 'gru', relu = mode === 'rnnRelu';
  const [T, B] = xgIn.shape;
  const H = wHh.shape[1];
  const { dtype, _dev: dev } = xgIn;
  const bs = batchSizes ?? new Array<number>(T).fill(B);
  const xg = dense(xgIn);
  // hs[s] (cs[s]) is the state before step s going forward, after step s going in reverse.
  const hs = emptyTensor([T + 1, B, H], dtype, dev);
  const cs = lstm ? emptyTensor([T + 1, B, H], dtype, dev) : null;
  const act = lstm || gru ? emptyTensor([T, B, 4 * H], dtype, dev) : null;
  const first = reverse ? T : 0, last = reverse ? 0 : T;
  const out = emptyTensor([T + (lstm ? 2 : 1), B, H], dtype, dev);
  // Every buffer is freed if a step throws.
  const owned = [hs, out, ...(cs ? [cs] : []), ...(act ? [act] : []), ...(xg !== xgIn ? [xg] : [])];
  fillOutputs(owned, () => noGrad(() => {
    tidy(() => {
      const setState = (buf: Tensor | null, init: Tensor | null) => {
        if (!buf) return;
        const v = rows(buf, first, B);
        if (init) copy_(v, init);
        else fill_(v, 0);
      };
      setState(hs, h0);
      setState(cs, c0);
    });
    for (let k = 0; k < T; k++) {
      const t = reverse ? T - 1 - k : k;
      const prev = reverse ? t + 1 : t, next = reverse ? t : t + 1, n = bs[t];
      tidy(() => {
        // Rows past a sequence's end carry their state (those not yet started in reverse hold h0).
        if (n < B) {
          copy_(tail(hs, next, n), tail(hs, prev, n));
          if (cs) copy_(tail(cs, next, n), tail(cs, prev, n));
        }
        if (n === 0) return;
        const hPrev = rows(hs, prev, n);
        let hg = linear(hPrev, wHh, bHh);
        if (hg.dtype !== dtype) hg = to(hg, dtype, hg.device);  // an autocast product
        const x = rows(xg, t, n), h = rows(hs, next, n);
        if (lstm) {
          K.lstmCellForward(x._h, hg._h, rows(cs!, prev, n)._h, h._h, rows(cs!, next, n)._h, rows(act!, t, n)._h);
        }
        else if (gru) K.gruCellForward(x._h, hg._h, hPrev._h, h._h, rows(act!, t, n)._h);
        else K.rnnCellForward(x._h, hg._h, relu, h._h);
      });
    }
    tidy(() => {
      // The output: each step's h, zero past each sequence's end; then h_n (and c_n).
      copy_(narrow(out, 0, 0, T), narrow(hs, 0, reverse ? 0 : 1, T));
      for (let t = 0; t < T; t++) if (bs[t] < B) fill_(tail(out, t, bs[t]), 0);
      copy_(rows(out, T, B), rows(hs, last, B));
      if (cs) copy_(rows(out, T + 1, B), rows(cs, last, B));
    });
  }));
  if (xg !== xgIn) xg.dispose();
  const saved = [hs, wHh, ...(cs ? [cs] : []), ...(act ? [act] : [])];
  const res = recordOp(opName(mode), [xgIn, wHh, bHh, h0, c0], out, saved, (g, s, needs) =>
    backRecurrence(dense(g), s, needs, mode, bs, reverse),
  );
  for (const t of [hs, cs, act]) t?.dispose();
  return res;
}

/**
 * The recurrence's backward: the gates' gradients of every step (xg's gradient; for the GRU also the
 * hidden side's), then W_hh's (and b_hh's) as one product (sum) over all steps, and the initial states'.
 */
function backRecurrence(g: Tensor, saved: Tensor[], needs: boolean[], mode: RnnMode, bs: readonly number[], reverse: boolean): Array<Tensor | null> {
  const lstm = mode === 'lstm', gru = mode === 'gru', relu = mode === 'rnnRelu';
  const [hs, w] = saved;
  const cs = lstm ? saved[2] : null;
  const act = lstm ? saved[3] : gru ? saved[2] : null;
  const T = hs.shape[0] - 1, B = hs.shape[1], H = hs.shape[2], GH = w.shape[0];
  const { dtype, _dev: dev } = hs;
  // Rows past a sequence's end get no gate gradient: those must read as zeros in the final product.
  const blank = (shape: number[]) => (bs.some((n) => n < B) ? zeros(shape, { dtype, device: hs.device }) : emptyTensor(shape, dtype, dev));
  const dxg = blank([T, B, GH]);
  const dhg = gru ? blank([T, B, GH]) : dxg;  // LSTM and RNN: both sides' gradients are the same
  // dh (dc) hold the gradient of the state after the step being undone: first h_n's (c_n's).
  let dh = contiguousCopy(rows(g, T, B));
  let dc = lstm ? contiguousCopy(rows(g, T + 1, B)) : null;
  let spare = lstm || gru ? emptyTensor([B, H], dtype, dev) : null;  // the next dc (LSTM) or dh (GRU)
  for (let k = 0; k < T; k++) {
    const t = reverse ? k : T - 1 - k;
    const prev = reverse ? t + 1 : t, next = reverse ? t : t + 1, n = bs[t];
    if (n === 0) continue;
    tidy(() => {
      const dhN = rows(dh, null, n), dy = rows(g, t, n);
      if (lstm) {
        K.lstmCellBackward(dhN._h, dy._h, rows(dc!, null, n)._h, rows(act!, t, n)._h, rows(cs!, prev, n)._h,
          rows(cs!, next, n)._h, rows(dxg, t, n)._h, rows(spare!, null, n)._h);
        if (n < B) copy_(tail(spare!, null, n), tail(dc!, null, n));
      } else if (gru) {
        K.gruCellBackward(dhN._h, dy._h, rows(act!, t, n)._h, rows(hs, prev, n)._h, rows(dxg, t, n)._h,
          rows(dhg, t, n)._h, rows(spare!, null, n)._h);
        if (n < B) copy_(tail(spare!, null, n), tail(dh, null, n));
      } else {
        K.rnnCellBackward(dhN._h, dy._h, rows(hs, next, n)._h, relu, rows(dxg, t, n)._h);
      }
      // The gradient reaching hPrev through hg = hPrev W_hh^T (+ b_hh).
      const viaW = matmul(rows(dhg, t, n), w);
      if (gru) rows(spare!, null, n).add_(viaW);
      else copy_(dhN, viaW);
    });
    if (lstm) [dc, spare] = [spare, dc];
    if (gru) [dh, spare] = [spare!, dh];
  }
  spare?.dispose();
  const flat = (x: Tensor, width: number) => x.view([T * B, width]);
  const hPrevAll = narrow(hs, 0, reverse ? 1 : 0, T);
  const gW = needs[1] ? matmul(transpose(flat(dhg, GH), 0, 1), flat(hPrevAll, H)) : null;
  const gb = gru && needs[2] ? sum(flat(dhg, GH), 0) : null;
  return [dxg, gW, gb, needs[3] ? dh : null, lstm && needs[4] ? dc : null];
}

const recurrenceOp = defineOp<RecurrenceArgs>({
  name: 'rnn',
  inputs: [0, 1, 2, 3, 4],
  kernels: KERNELS,
  autocast: 'float32',
  check: checkRecurrence,
  forward: runRecurrence,
});

/** @internal What one direction of one recurrent layer gives. */
export interface RecurrenceResult {
  /** Each step's hidden state [T, B, H], zero past each sequence's length. */
  output: Tensor;
  /** The hidden state after each sequence's last step (its first, in reverse) [B, H]. */
  h: Tensor;
  /** The same for the LSTM's cell state; null for the others. */
  c: Tensor | null;
}

/**
 * @internal Runs one direction of a recurrent layer over a sequence. xg [T, B, gates * H] is every
 * step's input side of the gates (x W_ih^T + b_ih, and + b_hh except for the GRU, whose b_hh is
 * bHh); wHh [gates * H, H]; h0 / c0 [B, H] (null: zeros). batchSizes (non-increasing, one per step)
 * gives packed-sequence semantics: at step t only rows [0, batchSizes[t]) run, the others keep their
 * state and output zeros; null runs every row at every step. reverse runs from the last step to the
 * first.
 */
export function recurrence(
  mode: RnnMode, xg: Tensor, wHh: Tensor, bHh: Tensor | null, h0: Tensor | null, c0: Tensor | null,
  batchSizes: readonly number[] | null, reverse: boolean,
): RecurrenceResult {
  const out = recurrenceOp(xg, wHh, bHh, h0, c0, mode, batchSizes, reverse);
  const T = xg.shape[0];
  const res = { output: narrow(out, 0, 0, T), h: select(out, 0, T), c: mode === 'lstm' ? select(out, 0, T + 1) : null };
  out.dispose();
  return res;
}
