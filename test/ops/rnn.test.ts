// Recurrent ops: each fused cell (RNN tanh/relu, LSTM, GRU) against a plain composition of kiln ops,
// their gradients by finite differences in float64; the whole-sequence recurrence against a loop of
// those compositions (both directions, packed batch sizes, initial states) and its gradients; the
// dtype policy (bfloat16 on the CPU through float32, autocast) and errors.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { GATE_COUNT, RnnMode, gruCell, lstmCell, recurrence, rnnCell } from '../../lib/ops/rnn';
import { gradcheck, maxAbsDiff, randomTensor, values } from '../helpers/gradcheck';

// ---- plain compositions ----

function refRnn(xg: Tensor, hg: Tensor, relu: boolean): Tensor {
  const pre = xg.add(hg);
  return relu ? pre.relu() : pre.tanh();
}

function refLstm(xg: Tensor, hg: Tensor, c: Tensor): [Tensor, Tensor] {
  const [i, f, g, o] = xg.add(hg).chunk(4, 1);
  const c2 = f.sigmoid().mul(c).add(i.sigmoid().mul(g.tanh()));
  return [o.sigmoid().mul(c2.tanh()), c2];
}

function refGru(xg: Tensor, hg: Tensor, h: Tensor): Tensor {
  const [xr, xz, xn] = xg.chunk(3, 1);
  const [hr, hz, hn] = hg.chunk(3, 1);
  const r = xr.add(hr).sigmoid(), z = xz.add(hz).sigmoid();
  const n = xn.add(r.mul(hn)).tanh();
  return kiln.sub(1, z).mul(n).add(z.mul(h));
}

/** The recurrence written with the compositions above, one step at a time (rows past a length carry state). */
function refRecurrence(mode: RnnMode, xg: Tensor, w: Tensor, b: Tensor | null, h0: Tensor, c0: Tensor | null, bs: number[] | null, reverse: boolean) {
  const [T, B] = xg.shape;
  let h = h0, c = c0;
  const outs: Tensor[] = new Array(T);
  for (let k = 0; k < T; k++) {
    const t = reverse ? T - 1 - k : k;
    const n = bs ? bs[t] : B;
    const x = xg.select(0, t).narrow(0, 0, n);
    const hp = h.narrow(0, 0, n);
    const hg = kiln.linear(hp, w, b);
    let hn: Tensor, cn: Tensor | null = null;
    if (mode === 'lstm') [hn, cn] = refLstm(x, hg, c!.narrow(0, 0, n));
    else if (mode === 'gru') hn = refGru(x, hg, hp);
    else hn = refRnn(x, hg, mode === 'rnnRelu');
    const keep = (full: Tensor, part: Tensor) => (n < B ? kiln.cat([part, full.narrow(0, n, B - n)], 0) : part);
    outs[t] = n < B ? kiln.cat([hn, kiln.zeros([B - n, hn.shape[1]], { dtype: hn.dtype })], 0) : hn;
    h = keep(h, hn);
    if (cn) c = keep(c!, cn);
  }
  return { output: kiln.stack(outs, 0), h, c };
}

// ---- cells ----

t.test('each cell matches its plain composition in float64 and float32', async (t) => {
  let seed = 1;
  for (const dtype of ['float64', 'float32'] as const) {
    const tol = dtype === 'float64' ? 1e-12 : 1e-6;
    for (const [n, H] of [[3, 5], [1, 1], [17, 33]]) {
      const rt = (shape: number[], lo = -2, hi = 2) => randomTensor(shape, seed++, lo, hi, dtype);
      for (const relu of [false, true]) {
        const xg = rt([n, H]), hg = rt([n, H]);
        const h = rnnCell(xg, hg, relu ? 'relu' : 'tanh');
        t.equal(h.dtype, dtype);
        t.ok(maxAbsDiff(values(h), values(refRnn(xg, hg, relu))) < tol, `rnn ${relu ? 'relu' : 'tanh'} ${dtype} [${n}, ${H}]`);
      }
      const lx = rt([n, 4 * H]), lh = rt([n, 4 * H]), c0 = rt([n, H]);
      const [h, c] = lstmCell(lx, lh, c0);
      const [rh, rc] = refLstm(lx, lh, c0);
      t.same(h.shape, [n, H]);
      t.ok(maxAbsDiff(values(h), values(rh)) < tol && maxAbsDiff(values(c), values(rc)) < tol, `lstm ${dtype} [${n}, ${H}]`);
      const gx = rt([n, 3 * H]), gh = rt([n, 3 * H]), h0 = rt([n, H]);
      t.ok(maxAbsDiff(values(gruCell(gx, gh, h0)), values(refGru(gx, gh, h0))) < tol, `gru ${dtype} [${n}, ${H}]`);
    }
  }
  // Saturated gates stay finite.
  const big = kiln.tensor([[-200, 200, -200, 200]], { dtype: 'float32' });
  const [h, c] = lstmCell(big, kiln.zerosLike(big), kiln.tensor([[1]], { dtype: 'float32' }));
  t.same(values(h).concat(values(c)).map(Number.isFinite), [true, true]);
});

t.test('cell gradients match finite differences', async (t) => {
  const cases: Array<[string, (...xs: Tensor[]) => Tensor, number[][]]> = [
    ['rnn tanh', (x, g) => rnnCell(x, g), [[3, 4], [3, 4]]],
    ['rnn relu', (x, g) => rnnCell(x, g, 'relu'), [[3, 4], [3, 4]]],
    ['lstm h and c', (x, g, c) => kiln.cat(lstmCell(x, g, c), 1), [[3, 8], [3, 8], [3, 2]]],
    ['lstm h only', (x, g, c) => lstmCell(x, g, c)[0], [[2, 12], [2, 12], [2, 3]]],
    ['gru', (x, g, h) => gruCell(x, g, h), [[3, 6], [3, 6], [3, 2]]],
  ];
  let seed = 100;
  for (const [name, f, shapes] of cases) {
    const r = gradcheck(f, shapes.map((s) => randomTensor(s, seed++, -1.5, 1.5)));
    t.ok(r.ok, `${name}: max error ${r.maxError.toExponential(2)} ${r.detail}`);
  }
  // Strided (transposed) gates are made contiguous and get their gradients back.
  const r = gradcheck((x, g) => rnnCell(x.t(), g), [randomTensor([4, 3], 7), randomTensor([3, 4], 8)]);
  t.ok(r.ok, `transposed gates: ${r.detail}`);
});

// ---- recurrence ----

const MODES: RnnMode[] = ['rnnTanh', 'rnnRelu', 'lstm', 'gru'];

function recurrenceInputs(mode: RnnMode, T: number, B: number, H: number, seed: number, dtype: kiln.DType = 'float64') {
  const G = GATE_COUNT[mode];
  return {
    xg: randomTensor([T, B, G * H], seed, -1, 1, dtype),
    w: randomTensor([G * H, H], seed + 1, -0.8, 0.8, dtype),
    b: mode === 'gru' ? randomTensor([G * H], seed + 2, -0.5, 0.5, dtype) : null,
    h0: randomTensor([B, H], seed + 3, -1, 1, dtype),
    c0: mode === 'lstm' ? randomTensor([B, H], seed + 4, -1, 1, dtype) : null,
  };
}

t.test('the recurrence matches a step-by-step composition', async (t) => {
  let seed = 200;
  for (const mode of MODES) {
    for (const reverse of [false, true]) {
      for (const bs of [null, [4, 4, 3, 1, 1], [4, 2, 2, 0, 0]]) {
        const { xg, w, b, h0, c0 } = recurrenceInputs(mode, 5, 4, 3, (seed += 10));
        const got = recurrence(mode, xg, w, b, h0, c0, bs, reverse);
        const want = refRecurrence(mode, xg, w, b, h0, c0, bs, reverse);
        const what = `${mode}${reverse ? ' reverse' : ''} batchSizes ${JSON.stringify(bs)}`;
        t.same(got.output.shape, [5, 4, 3]);
        t.ok(maxAbsDiff(values(got.output), values(want.output)) < 1e-12, `${what}: output`);
        t.ok(maxAbsDiff(values(got.h), values(want.h)) < 1e-12, `${what}: h`);
        if (mode === 'lstm') t.ok(maxAbsDiff(values(got.c!), values(want.c!)) < 1e-12, `${what}: c`);
        else t.equal(got.c, null);
      }
    }
  }
  // Without initial states: zeros.
  const { xg, w } = recurrenceInputs('lstm', 3, 2, 2, 7);
  const z = kiln.zeros([2, 2], { dtype: 'float64' });
  const a = recurrence('lstm', xg, w, null, null, null, null, false);
  const r = refRecurrence('lstm', xg, w, null, z, z, null, false);
  t.ok(maxAbsDiff(values(a.output), values(r.output)) < 1e-12, 'zero initial states');
});

t.test('recurrence gradients match finite differences', async (t) => {
  let seed = 400;
  for (const mode of MODES) {
    for (const [reverse, bs] of [[false, null], [true, null], [false, [3, 2, 1]], [true, [3, 3, 1]]] as Array<[boolean, number[] | null]>) {
      const { xg, w, b, h0, c0 } = recurrenceInputs(mode, 3, 3, 2, (seed += 10));
      const inputs = [xg, w, h0, ...(b ? [b] : []), ...(c0 ? [c0] : [])];
      const f = (x: Tensor, wh: Tensor, h: Tensor, ...rest: Tensor[]) => {
        const bb = mode === 'gru' ? rest[0] : null, cc = mode === 'lstm' ? rest[0] : null;
        const r = recurrence(mode, x, wh, bb, h, cc, bs, reverse);
        // Every output takes part: the sequence, h_n and c_n.
        return kiln.cat([r.output.reshape([-1]), r.h.reshape([-1]), ...(r.c ? [r.c.reshape([-1])] : [])], 0);
      };
      const res = gradcheck(f, inputs);
      t.ok(res.ok, `${mode}${reverse ? ' reverse' : ''} batchSizes ${JSON.stringify(bs)}: ${res.maxError.toExponential(2)} ${res.detail}`);
    }
  }
});

t.test('recurrence gradients reach only what needs them', async (t) => {
  const { xg, w, h0, c0 } = recurrenceInputs('lstm', 4, 2, 3, 9);
  w.requiresGrad = true;
  const r = recurrence('lstm', xg, w, null, h0, c0, null, false);
  r.h.sum().backward();
  t.same(w.grad!.shape, [12, 3]);
  t.equal(xg.grad, null);
  t.equal(h0.grad, null);
  t.ok(r.c!.requiresGrad, "c_n is part of the graph too");
});

t.test('dtype policy: bfloat16 on the CPU computes in float32; autocast keeps the states in float32', async (t) => {
  const { xg, w, h0 } = recurrenceInputs('lstm', 4, 3, 5, 11, 'float32');
  const c0 = randomTensor([3, 5], 99, -1, 1, 'float32');
  const ref = recurrence('lstm', xg, w, null, h0, c0, null, false);
  const bf = (x: Tensor) => x.to('bfloat16');
  const low = recurrence('lstm', bf(xg), bf(w), null, bf(h0), bf(c0), null, false);
  t.equal(low.output.dtype, 'bfloat16');
  t.ok(maxAbsDiff(values(low.output), values(ref.output)) < 3e-2, 'bfloat16 close to float32');
  const [h] = lstmCell(bf(xg.select(0, 0)), bf(xg.select(0, 1)), bf(c0));
  t.equal(h.dtype, 'bfloat16');

  const ac = kiln.autocast({ dtype: 'bfloat16' }, () => recurrence('lstm', bf(xg), w, null, h0, c0, null, false));
  t.equal(ac.output.dtype, 'float32', 'autocast: the cell computes in float32');
  t.ok(maxAbsDiff(values(ac.output), values(ref.output)) < 3e-2, 'autocast close to float32');
  const g = kiln.autocast({ dtype: 'bfloat16' }, () => gruCell(bf(kiln.ones([2, 3])), kiln.ones([2, 3]), bf(kiln.ones([2, 1]))));
  t.equal(g.dtype, 'float32');
});

t.test('bad arguments are errors naming the op and shapes', async (t) => {
  const f = (s: number[]) => kiln.zeros(s);
  t.throws(() => lstmCell(f([2, 7]), f([2, 7]), f([2, 1])), { name: 'ShapeError', message: /lstmCell.*\[n, 4 \* hiddenSize\].*\[2, 7\]/ });
  t.throws(() => lstmCell(f([2, 8]), f([3, 8]), f([2, 2])), { name: 'ShapeError', message: /hidden gates must have shape \[2, 8\], got \[3, 8\]/ });
  t.throws(() => gruCell(f([2, 6]), f([2, 6]), f([2, 3])), { name: 'ShapeError', message: /gruCell: hidden state must have shape \[2, 2\]/ });
  t.throws(() => rnnCell(f([2, 2]), kiln.zeros([2, 2], { dtype: 'float64' })), { name: 'DTypeError', message: /rnnCell.*float64.*float32/ });
  t.throws(() => rnnCell(kiln.zeros([2, 2], { dtype: 'int32' }), kiln.zeros([2, 2], { dtype: 'int32' })), { name: 'DTypeError' });
  const { xg, w, h0 } = recurrenceInputs('gru', 3, 2, 2, 1);
  t.throws(() => recurrence('gru', xg, w.t(), null, h0, null, null, false), { name: 'ShapeError', message: /gru: weight_hh must have shape \[6, 2\], got \[2, 6\]/ });
  t.throws(() => recurrence('gru', xg, w, null, h0, null, [2, 3, 1], false), { name: 'ValueError', message: /batchSizes must be 3 non-increasing integers in \[0, 2\]/ });
  t.throws(() => recurrence('gru', xg, w, null, h0, null, [2, 1], false), { name: 'ValueError' });
  t.throws(() => recurrence('gru', xg.narrow(0, 0, 0), w, null, h0, null, null, false), { name: 'ShapeError', message: /no steps/ });
  t.throws(() => recurrence('rnnTanh', randomTensor([3, 2, 2], 1), randomTensor([2, 2], 2), null, null, h0, null, false), { name: 'ValueError', message: /only the LSTM/ });
});
