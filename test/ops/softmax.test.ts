// Softmax family: softmax / logSoftmax along every dim and on strided views, cross-entropy with
// ignoreIndex, label smoothing and every reduction, against plain references; gradients by
// finite differences in float64; errors.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { native } from '../../lib/native';
import { expectSteadyMemory, gradcheck, maxAbsDiff, randomTensor, rng, values } from '../helpers/gradcheck';

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Softmax (or log-softmax) of row-major values of `shape` along dim, in float64. */
function refSoftmax(v: number[], shape: readonly number[], dim: number, log: boolean): number[] {
  const D = shape[dim] ?? 1, inner = prod(shape.slice(dim + 1)), outer = prod(shape.slice(0, dim));
  const out = new Array<number>(v.length);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (k: number) => (o * D + k) * inner + i;
      let m = -Infinity;
      for (let k = 0; k < D; k++) m = Math.max(m, v[at(k)]);
      let s = 0;
      for (let k = 0; k < D; k++) s += Math.exp(v[at(k)] - m);
      for (let k = 0; k < D; k++) out[at(k)] = log ? v[at(k)] - m - Math.log(s) : Math.exp(v[at(k)] - m) / s;
    }
  }
  return out;
}

/** Gradient of softmax / log-softmax along dim given the output y and the output gradient g. */
function refSoftmaxGrad(y: number[], g: number[], shape: readonly number[], dim: number, log: boolean): number[] {
  const D = shape[dim], inner = prod(shape.slice(dim + 1)), outer = prod(shape.slice(0, dim));
  const out = new Array<number>(y.length);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (k: number) => (o * D + k) * inner + i;
      let s = 0;
      for (let k = 0; k < D; k++) s += log ? g[at(k)] : g[at(k)] * y[at(k)];
      for (let k = 0; k < D; k++) out[at(k)] = log ? g[at(k)] - Math.exp(y[at(k)]) * s : y[at(k)] * (g[at(k)] - s);
    }
  }
  return out;
}

t.test('softmax and logSoftmax match the reference along every dim', async (t) => {
  const shapes: number[][] = [[5], [3, 7], [2, 3, 4], [3, 1, 129], [2, 1000], [3, 5, 130], [4, 3, 2, 5]];
  let seed = 1;
  for (const dtype of ['float64', 'float32'] as const) {
    for (const shape of shapes) {
      const x = randomTensor(shape, seed++, -4, 4, dtype);
      const xv = values(x);
      for (let dim = 0; dim < shape.length; dim++) {
        for (const log of [false, true]) {
          const y = log ? x.logSoftmax(dim) : x.softmax(dim);
          t.equal(y.dtype, dtype);
          t.same(y.shape, shape);
          const err = maxAbsDiff(values(y), refSoftmax(xv, shape, dim, log));
          t.ok(err < (dtype === 'float64' ? 1e-12 : 2e-6), `${log ? 'logSoftmax' : 'softmax'} ${dtype} ${JSON.stringify(shape)} dim ${dim}: ${err}`);
        }
      }
    }
  }
  // Negative dims count from the end.
  const x = randomTensor([3, 4], 99);
  t.same(values(kiln.softmax(x, -2)), values(kiln.softmax(x, 0)));
  t.same(values(x.softmax()), values(x.softmax(1)));
});

t.test('softmax on non-contiguous inputs (transposed, sliced, expanded, permuted)', async (t) => {
  const base = randomTensor([6, 8, 5], 7, -3, 3);
  const views: Array<[string, Tensor]> = [
    ['transpose', base.transpose(0, 2)],
    ['slice step', base.slice(1, 1, 8, 3)],
    ['expand', base.slice(0, 2, 3).expand(4, 8, 5)],
    ['permute', base.permute(1, 2, 0)],
    ['select', base.select(2, 3)],
  ];
  for (const [name, v] of views) {
    t.notOk(v.isContiguous(), `${name} is a strided view`);
    const vv = values(v);
    for (let dim = 0; dim < v.ndim; dim++) {
      for (const log of [false, true]) {
        const y = log ? v.logSoftmax(dim) : v.softmax(dim);
        const err = maxAbsDiff(values(y), refSoftmax(vv, v.shape, dim, log));
        t.ok(err < 1e-12, `${name} dim ${dim} log=${log}: ${err}`);
      }
    }
  }
});

t.test('softmax is stable for large values, sums to 1 and handles scalars and empty tensors', async (t) => {
  const big = kiln.tensor([[1000, 1001, 1002], [-1000, -1000, 0]], { dtype: 'float32' });
  const s = values(big.softmax(1));
  t.ok(s.every(Number.isFinite));
  t.ok(Math.abs(s[0] + s[1] + s[2] - 1) < 1e-6);
  const ls = values(big.logSoftmax(1));
  t.ok(Math.abs(ls[3] + 1000) < 1e-3 && Math.abs(ls[5]) < 1e-6, `log-softmax keeps tiny probabilities: ${ls}`);
  const p = values(randomTensor([7, 33], 3, -10, 10).softmax(1));
  for (let r = 0; r < 7; r++) {
    const sum = p.slice(r * 33, r * 33 + 33).reduce((a, b) => a + b, 0);
    t.ok(Math.abs(sum - 1) < 1e-12, `row ${r} sums to ${sum}`);
  }
  t.equal(kiln.scalar(3, { dtype: 'float64' }).softmax(0).item(), 1);
  t.equal(kiln.scalar(3).logSoftmax(-1).item(), 0);
  t.same(kiln.zeros([0, 4]).softmax(1).shape, [0, 4]);
  t.same(kiln.zeros([3, 0]).logSoftmax(1).shape, [3, 0]);
});

t.test('softmax and logSoftmax gradients (finite differences, float64)', async (t) => {
  const x = randomTensor([3, 4, 5], 11, -2, 2);
  for (const log of [false, true]) {
    const f = (dim: number) => (a: Tensor) => (log ? a.logSoftmax(dim) : a.softmax(dim));
    for (const dim of [0, 1, 2, -1]) {
      const r = gradcheck(f(dim), [x]);
      t.ok(r.ok, `log=${log} dim ${dim}: ${r.detail}`);
    }
    const strided = gradcheck((a) => (log ? a.transpose(0, 2).logSoftmax(1) : a.transpose(0, 2).softmax(1)), [x]);
    t.ok(strided.ok, `log=${log} transposed input: ${strided.detail}`);
    const sliced = gradcheck((a) => (log ? a.slice(2, 0, 5, 2).logSoftmax(0) : a.slice(2, 0, 5, 2).softmax(0)), [x]);
    t.ok(sliced.ok, `log=${log} sliced input: ${sliced.detail}`);
    // A permuted output makes the incoming gradient non-contiguous.
    const permutedGrad = gradcheck((a) => (log ? a.logSoftmax(1) : a.softmax(1)).permute(2, 0, 1), [x]);
    t.ok(permutedGrad.ok, `log=${log} permuted gradient: ${permutedGrad.detail}`);
  }
});

t.test('softmax backward with broadcast and transposed incoming gradients', async (t) => {
  for (const log of [false, true]) {
    for (const dim of [0, 1]) {
      const x = randomTensor([4, 6], 21 + dim).requiresGrad_();
      const y = log ? x.logSoftmax(dim) : x.softmax(dim);
      const g = randomTensor([1, 6], 5).expand(4, 6);
      y.backward(g, { retainGraph: true });
      const want = refSoftmaxGrad(values(y), values(g), [4, 6], dim, log);
      t.ok(maxAbsDiff(values(x.grad!), want) < 1e-12, `expanded gradient, log=${log} dim ${dim}`);
      x.grad = null;
      const gt = randomTensor([6, 4], 6).t();
      y.backward(gt);
      t.ok(maxAbsDiff(values(x.grad!), refSoftmaxGrad(values(y), values(gt), [4, 6], dim, log)) < 1e-12, `transposed gradient, log=${log} dim ${dim}`);
    }
  }
  // float32 backward along a strided (non-last) dim with several column tiles.
  const x = randomTensor([3, 7, 150], 8, -2, 2, 'float32').requiresGrad_();
  const y = x.softmax(1);
  const g = randomTensor([3, 7, 150], 9, -1, 1, 'float32');
  y.backward(g);
  t.ok(maxAbsDiff(values(x.grad!), refSoftmaxGrad(values(y), values(g), [3, 7, 150], 1, false)) < 1e-6);
});

t.test('float32 rows longer than a block (vectorized row kernels), masked entries included', async (t) => {
  // Rows of 2500 (two blocks of 1024 and a tail, not a multiple of the vector width), every 7th entry
  // -Infinity as a causal mask leaves it; one row entirely NaN-free, one with a NaN.
  const shape = [3, 2500];
  const vals = values(randomTensor(shape, 77, -8, 8, 'float32')).map((v, i) => (i % 7 === 3 ? -Infinity : v));
  vals[2 * 2500 + 10] = NaN;
  const x = kiln.tensor(vals, { shape, dtype: 'float32' }).requiresGrad_();
  const g = randomTensor(shape, 78, -1, 1, 'float32');
  for (const log of [false, true]) {
    const y = log ? x.logSoftmax(1) : x.softmax(1);
    const want = refSoftmax(vals, shape, 1, log);
    const got = values(y);
    // Rows 0 and 1 match; row 2 is all NaN because of its NaN.
    t.ok(maxAbsDiff(got.slice(0, 5000).map((v, i) => (v === want[i] ? 0 : v)), want.slice(0, 5000).map((v, i) => (v === got[i] ? 0 : v))) < 2e-6, `${log ? 'log' : ''}softmax rows`);
    t.ok(got.slice(5000).every(Number.isNaN), 'a NaN in a row makes the row NaN');
    if (!log) t.ok(got.slice(0, 5000).every((v, i) => vals[i] !== -Infinity || v === 0), 'masked entries get exactly 0');
    x.grad = null;
    y.backward(g);
    const wantGrad = refSoftmaxGrad(want, values(g), shape, 1, log);
    const gotGrad = values(x.grad!);
    let err = 0;
    for (let i = 0; i < 5000; i++) if (Number.isFinite(wantGrad[i])) err = Math.max(err, Math.abs(gotGrad[i] - wantGrad[i]));
    t.ok(err < 2e-6, `${log ? 'log' : ''}softmax gradient: ${err}`);
  }
});

t.test('bfloat16 and float16 on the CPU compute in float32 and round once; gradients flow back', async (t) => {
  const x32 = randomTensor([3, 40], 5, -4, 4, 'float32');
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const x = x32.to(dtype).requiresGrad_();
    const xf = x.detach().to('float32').requiresGrad_();
    for (const log of [false, true]) {
      const y = log ? x.logSoftmax(1) : x.softmax(1);
      const yf = log ? xf.logSoftmax(1) : xf.softmax(1);
      t.equal(y.dtype, dtype);
      t.same(values(y), values(yf.to(dtype)), `${log ? 'logSoftmax' : 'softmax'} ${dtype} is the float32 result rounded`);
    }
    const tg = kiln.tensor([3, 0, 39]);
    const loss = kiln.crossEntropy(x, tg, { labelSmoothing: 0.1 });
    const lossf = kiln.crossEntropy(xf, tg, { labelSmoothing: 0.1 });
    t.equal(loss.dtype, dtype);
    t.same(values(loss), values(lossf.to(dtype)), `crossEntropy ${dtype}`);
    loss.backward();
    lossf.backward();
    t.equal(x.grad!.dtype, dtype);
    t.same(values(x.grad!), values(xf.grad!.to(dtype)), `crossEntropy gradient ${dtype}`);
  }
});

t.test('softmax errors', async (t) => {
  t.throws(() => kiln.tensor([1, 2, 3]).softmax(0), kiln.DTypeError);
  t.throws(() => kiln.tensor([1, 2, 3], { dtype: 'int32' }).logSoftmax(0), /logSoftmax: input must be floating point, got int32/);
  t.throws(() => kiln.zeros([2, 3]).softmax(2), kiln.IndexError);
  t.throws(() => kiln.zeros([2, 3]).logSoftmax(-3), /logSoftmax: dim -3 out of range/);
  const d = kiln.zeros([2]);
  d.dispose();
  t.throws(() => d.softmax(0), kiln.DisposedError);
});

// ---- cross-entropy ----

interface CEOpts {
  ignoreIndex?: number;
  labelSmoothing?: number;
  reduction?: 'mean' | 'sum' | 'none';
}

/** PyTorch's definition: per row (1 - ε)·nll + ε·mean_c(-logp_c), 0 for ignored rows; mean divides by the non-ignored count. */
function refCrossEntropy(x: number[], shape: readonly number[], target: number[], o: CEOpts): number[] {
  const ignore = o.ignoreIndex ?? -100, eps = o.labelSmoothing ?? 0;
  const cdim = shape.length === 1 ? 0 : 1;
  const logp = refSoftmax(x, shape, cdim, true);
  const C = shape[cdim], inner = prod(shape.slice(cdim + 1)), outer = cdim === 0 ? 1 : shape[0];
  const rows: number[] = [];
  let count = 0;
  for (let n = 0; n < outer; n++) {
    for (let i = 0; i < inner; i++) {
      const tg = target[n * inner + i];
      if (tg === ignore) {
        rows.push(0);
        continue;
      }
      count++;
      let smooth = 0;
      for (let c = 0; c < C; c++) smooth -= logp[(n * C + c) * inner + i] / C;
      rows.push((1 - eps) * -logp[(n * C + tg) * inner + i] + eps * smooth);
    }
  }
  const red = o.reduction ?? 'mean';
  if (red === 'none') return rows;
  const sum = rows.reduce((a, b) => a + b, 0);
  return [red === 'sum' ? sum : sum / count];
}

function randomTargets(n: number, C: number, seed: number, ignoreEvery = 0, ignoreIndex = -100): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i) => (ignoreEvery && i % ignoreEvery === 1 ? ignoreIndex : Math.floor(r() * C)));
}

t.test('crossEntropy matches the reference ([N, C], [N, C, d...], 1-D), all options', async (t) => {
  const layouts: Array<[number[], number[]]> = [
    [[6, 5], [6]],
    [[4, 3, 7], [4, 7]],
    [[2, 4, 3, 5], [2, 3, 5]],
    [[3, 6, 70], [3, 70]],
    [[9], []],
  ];
  const optsList: CEOpts[] = [
    {},
    { reduction: 'sum' },
    { reduction: 'none' },
    { labelSmoothing: 0.1 },
    { labelSmoothing: 0.25, reduction: 'none' },
    { ignoreIndex: -100, labelSmoothing: 0.2, reduction: 'sum' },
    { ignoreIndex: 2, labelSmoothing: 0.1 },
    { ignoreIndex: -1 },
  ];
  let seed = 40;
  for (const dtype of ['float64', 'float32'] as const) {
    for (const tdtype of ['int64', 'int32'] as const) {
      for (const [shape, tshape] of layouts) {
        const C = shape.length === 1 ? shape[0] : shape[1];
        const x = randomTensor(shape, seed++, -3, 3, dtype);
        for (const o of optsList) {
          const ignore = o.ignoreIndex ?? -100;
          // ignoreIndex 2 is also a valid class: its rows are ignored all the same.
          const tv = randomTargets(prod(tshape), C, seed++, 3, ignore);
          const target = kiln.tensor(tv, { shape: tshape, dtype: tdtype });
          const loss = kiln.crossEntropy(x, target, o);
          t.same(loss.shape, (o.reduction ?? 'mean') === 'none' ? tshape : []);
          const err = maxAbsDiff(values(loss), refCrossEntropy(values(x), shape, tv, o));
          t.ok(err < (dtype === 'float64' ? 1e-12 : 1e-5), `${dtype}/${tdtype} ${JSON.stringify(shape)} ${JSON.stringify(o)}: ${err}`);
        }
      }
    }
  }
});

t.test('crossEntropy on non-contiguous logits and targets', async (t) => {
  const x = randomTensor([5, 8], 3, -2, 2).t(); // [8, 5], classes strided
  const tv = [0, 4, 2, 1, 3, 3, 0, 2];
  const target = kiln.tensor(tv);
  const o: CEOpts = { labelSmoothing: 0.1, reduction: 'none' };
  t.ok(maxAbsDiff(values(kiln.crossEntropy(x, target, o)), refCrossEntropy(values(x), [8, 5], tv, o)) < 1e-12);
  // Classes along a strided dim 1 of [2, 6, 4], with a transposed target and an expanded one.
  const x3 = randomTensor([4, 2, 6], 4).permute(1, 2, 0);
  const targets = [kiln.tensor([[0, 3], [5, 3], [1, 4], [2, 0]]).t(), kiln.tensor([[0, 5, 1, 2]]).expand(2, 4)];
  for (const tg of targets) {
    t.notOk(tg.isContiguous());
    const got = kiln.crossEntropy(x3, tg, { reduction: 'none', labelSmoothing: 0.3 });
    t.ok(maxAbsDiff(values(got), refCrossEntropy(values(x3), [2, 6, 4], values(tg), { reduction: 'none', labelSmoothing: 0.3 })) < 1e-12);
  }
});

t.test('crossEntropy gradients (finite differences, float64)', async (t) => {
  const cases: Array<[string, number[], number[], CEOpts]> = [
    ['mean', [5, 4], [0, 3, 1, 2, 3], {}],
    ['sum', [5, 4], [0, 3, 1, 2, 3], { reduction: 'sum' }],
    ['none', [5, 4], [0, 3, 1, 2, 3], { reduction: 'none' }],
    ['ignoreIndex mean', [5, 4], [0, -100, 1, -100, 3], {}],
    ['ignoreIndex none', [5, 4], [0, -100, 1, -100, 3], { reduction: 'none' }],
    ['smoothing mean', [5, 4], [0, 3, 1, 2, 3], { labelSmoothing: 0.2 }],
    ['smoothing + ignore sum', [5, 4], [0, 1, 1, -100, 3], { labelSmoothing: 0.3, reduction: 'sum' }],
    ['smoothing + ignore none', [5, 4], [2, 1, -1, 2, 3], { labelSmoothing: 0.1, ignoreIndex: -1, reduction: 'none' }],
    ['[N, C, d] mean', [2, 3, 4], [0, 2, 1, 1, 2, 0, -100, 1], { labelSmoothing: 0.1 }],
    ['[N, C, d] none', [2, 3, 4], [0, 2, 1, 1, 2, 0, 0, 1], { reduction: 'none' }],
    ['[N, C, d1, d2] sum', [2, 3, 2, 2], [0, 2, 1, 1, 2, 0, -100, 1], { reduction: 'sum', labelSmoothing: 0.5 }],
    ['1-D logits', [6], [4], { labelSmoothing: 0.1 }],
  ];
  let seed = 70;
  for (const [name, shape, tv, o] of cases) {
    const tshape = shape.length === 1 ? [] : shape.filter((_, i) => i !== 1);
    const target = kiln.tensor(tv, { shape: tshape });
    const x = randomTensor(shape, seed++, -2, 2);
    const r = gradcheck((a) => kiln.crossEntropy(a, target, o), [x]);
    t.ok(r.ok, `${name}: ${r.detail}`);
  }
  // Strided logits: classes along a non-contiguous dim.
  const target = kiln.tensor([1, 0, 2, 2], { dtype: 'int32' });
  const r = gradcheck((a) => kiln.crossEntropy(a.t(), target, { labelSmoothing: 0.1 }), [randomTensor([3, 4], 5)]);
  t.ok(r.ok, `transposed logits: ${r.detail}`);
});

t.test('crossEntropy backward: gradient only to logits, ignored rows get zero, all-ignored mean is NaN', async (t) => {
  const x = randomTensor([4, 3], 12).requiresGrad_();
  const target = kiln.tensor([1, -100, 2, -100]);
  const loss = kiln.crossEntropy(x, target, { labelSmoothing: 0.2 });
  t.equal(target.requiresGrad, false);
  loss.backward();
  const g = values(x.grad!);
  t.same(g.slice(3, 6), [0, 0, 0]);
  t.same(g.slice(9, 12), [0, 0, 0]);
  const rowSum = g.slice(0, 3).reduce((a, b) => a + b, 0);
  t.ok(Math.abs(rowSum) < 1e-12, 'each row gradient sums to zero');
  const allIgnored = kiln.crossEntropy(randomTensor([2, 3], 1), kiln.tensor([-100, -100]));
  t.ok(Number.isNaN(allIgnored.item()), 'mean over no targets is NaN, like PyTorch');
  t.equal(kiln.crossEntropy(randomTensor([2, 3], 1), kiln.tensor([-100, -100]), { reduction: 'sum' }).item(), 0);
  const y = randomTensor([2, 3], 2).requiresGrad_();
  kiln.crossEntropy(y, kiln.tensor([-100, -100])).backward();
  t.same(values(y.grad!), [0, 0, 0, 0, 0, 0]);
  // Large logits stay finite; the loss of a confident right answer is ~0.
  const big = kiln.tensor([[1000, 0, -1000], [0, 500, 1000]], { dtype: 'float32' });
  const lb = values(kiln.crossEntropy(big, kiln.tensor([0, 2]), { reduction: 'none' }));
  t.ok(lb.every((v) => Number.isFinite(v) && Math.abs(v) < 1e-6), `${lb}`);
  // float32 gradient against the reference (softmax - onehot) / N.
  const xf = randomTensor([33, 70], 13, -3, 3, 'float32').requiresGrad_();
  const tf = randomTargets(33, 70, 14);
  kiln.crossEntropy(xf, kiln.tensor(tf)).backward();
  const p = refSoftmax(values(xf), [33, 70], 1, false);
  const want = p.map((v, i) => (v - (i % 70 === tf[Math.floor(i / 70)] ? 1 : 0)) / 33);
  t.ok(maxAbsDiff(values(xf.grad!), want) < 1e-7);
});

t.test('crossEntropy over many classes in float32 (vectorized row kernels): loss and gradient', async (t) => {
  const N = 6, C = 3001;
  const xv = values(randomTensor([N, C], 91, -6, 6, 'float32'));
  const tv = randomTargets(N, C, 92, 4);
  for (const o of [{}, { labelSmoothing: 0.1 }, { reduction: 'sum' as const }]) {
    const x = kiln.tensor(xv, { shape: [N, C], dtype: 'float32' }).requiresGrad_();
    const loss = kiln.crossEntropy(x, kiln.tensor(tv), o);
    t.ok(maxAbsDiff(values(loss), refCrossEntropy(xv, [N, C], tv, o)) < 1e-5, `loss ${JSON.stringify(o)}`);
    loss.backward();
    // d loss / d x = w_row * (softmax - (1 - eps) onehot - eps / C); w_row = 1/count (mean) or 1, 0 if ignored.
    const p = refSoftmax(xv, [N, C], 1, false);
    const eps = o.labelSmoothing ?? 0;
    const count = tv.filter((v) => v !== -100).length;
    const w = o.reduction === 'sum' ? 1 : 1 / count;
    const want = p.map((pv, i) => {
      const row = Math.floor(i / C), c = i % C;
      if (tv[row] === -100) return 0;
      return w * (pv - eps / C - (c === tv[row] ? 1 - eps : 0));
    });
    t.ok(maxAbsDiff(values(x.grad!), want) < 1e-7, `gradient ${JSON.stringify(o)}`);
  }
});

t.test('crossEntropy with -Infinity logits (masked classes) is finite on every layout', async (t) => {
  // Classes last (row kernel) and classes along dim 1 of a 3-D tensor (strided kernel) must agree.
  const rows = [[0.5, -Infinity, 2, -1], [-Infinity, 1, 0, -Infinity]];
  const x2 = kiln.tensor(rows);
  const lse = (r: number[]) => Math.log(r.reduce((s, v) => s + Math.exp(v), 0));
  const want = [(lse(rows[0]) - rows[0][2] + lse(rows[1]) - rows[1][1]) / 2];
  t.ok(Math.abs(kiln.crossEntropy(x2, kiln.tensor([2, 1])).item() - want[0]) < 1e-6, 'classes last');
  const x3 = x2.unsqueeze(2).expand(2, 4, 3).contiguous(); // [2, 4, 3]: classes strided
  const t3 = kiln.tensor([[2, 2, 2], [1, 1, 1]]);
  t.ok(Math.abs(kiln.crossEntropy(x3, t3).item() - want[0]) < 1e-6, 'classes along dim 1');
  const smooth = kiln.crossEntropy(x2, kiln.tensor([2, 1]), { labelSmoothing: 0.1 }).item();
  t.equal(smooth, Infinity, 'with smoothing a -inf logit makes the smoothed loss infinite, as in PyTorch');
});

t.test('crossEntropy errors', async (t) => {
  const x = kiln.zeros([4, 5]);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([0, 1, 2, 3], { dtype: 'float32' })), kiln.DTypeError);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([true, false, true, true])), /target must hold class indices as int32 or int64, got bool/);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([0, 1, 2])), /crossEntropy: target shape \[3\] does not match logits shape \[4, 5\]: expected \[4\]/);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([[0], [1], [2], [3]])), kiln.ShapeError);
  t.throws(() => kiln.crossEntropy(kiln.zeros([2, 3, 4]), kiln.tensor([0, 1])), kiln.ShapeError);
  t.throws(() => kiln.crossEntropy(kiln.zeros([4, 5], { dtype: 'int64' }), kiln.tensor([0, 1, 2, 3])), /crossEntropy: logits must be floating point, got int64/);
  t.throws(() => kiln.crossEntropy(kiln.scalar(1), kiln.tensor(0)), kiln.ShapeError);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([0, 1, 5, 3])), /crossEntropy: target 5 is out of bounds for 5 classes/);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([0, -1, 2, 3])), kiln.IndexError);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([0, 1, 2, -100]), { ignoreIndex: 0 }), /target -100 is out of bounds for 5 classes/);
  t.throws(() => kiln.crossEntropy(kiln.zeros([2, 3, 2]), kiln.tensor([[0, 1], [2, 7]], { dtype: 'int32' })), /target 7 is out of bounds for 3 classes/);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([0, 1, 2, 3]), { reduction: 'avg' as 'mean' }), kiln.ValueError);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([0, 1, 2, 3]), { labelSmoothing: 1.5 }), /labelSmoothing must be a number in \[0, 1\]/);
  t.throws(() => kiln.crossEntropy(x, kiln.tensor([0, 1, 2, 3]), { ignoreIndex: 0.5 }), kiln.ValueError);
  const bad = kiln.tensor([9, 9, 9, 9]);
  const before = kiln.memory().tensors;
  t.throws(() => kiln.crossEntropy(x, bad), kiln.IndexError);
  t.equal(kiln.memory().tensors, before, 'a failed forward frees its outputs');
});

t.test('native kernels check their arguments when called directly', async (t) => {
  const N = native as unknown as Record<string, (...a: unknown[]) => void>;
  const x = kiln.zeros([4, 5]);
  t.throws(() => N.softmaxForward(x._h, 1, false, kiln.zeros([5, 4])._h), /softmax: input shape \[4, 5\] does not match output shape \[5, 4\]/);
  t.throws(() => N.softmaxForward(x._h, 2, true, kiln.zeros([4, 5])._h), kiln.IndexError);
  t.throws(() => N.softmaxBackward(x._h, kiln.zeros([4, 5], { dtype: 'float64' })._h, 1, false, kiln.zeros([4, 5])._h), kiln.DTypeError);
  const scalar = () => kiln.zeros([]);
  const bad = kiln.tensor([0, 1, 7, 2]);
  t.throws(() => N.crossEntropyBackward(x._h, bad._h, kiln.zeros([4])._h, scalar()._h, scalar()._h, -100, 0, 2, kiln.zeros([4, 5])._h), /crossEntropy backward: target 7 is out of bounds for 5 classes/);
  const good = kiln.tensor([0, 1, 3, 2]);
  t.throws(() => N.crossEntropyForward(x._h, good._h, -100, 0, 0, scalar()._h, kiln.zeros([4])._h, scalar()._h), kiln.ShapeError);
  t.throws(() => N.crossEntropyForward(x._h, good._h, -100, 0, 3, scalar()._h, kiln.zeros([4])._h, scalar()._h), kiln.ValueError);
  t.throws(() => N.crossEntropyForward(x._h, good._h, -100, 2, 1, scalar()._h, kiln.zeros([4])._h, scalar()._h), kiln.ValueError);
  t.throws(() => N.crossEntropyForward(x._h, good._h, -100, 0, 1, scalar()._h, kiln.zeros([5])._h, scalar()._h), kiln.ShapeError);
});

t.test('forward and backward free everything they allocate', async (t) => {
  const x = randomTensor([8, 10], 31).requiresGrad_();
  const target = kiln.tensor([1, 2, 3, -100, 5, 6, 7, 8]);
  const dropGrad = () => {
    x.grad!.dispose();
    x.grad = null;
  };
  const step = () => {
    kiln.tidy(() => {
      kiln.crossEntropy(x.softmax(1).logSoftmax(0), target, { labelSmoothing: 0.1 }).backward();
      dropGrad();
      kiln.crossEntropy(x, target, { reduction: 'none' }).backward(kiln.onesLike(target, { dtype: 'float64' }));
      dropGrad();
      kiln.noGrad(() => kiln.crossEntropy(x, target));
    });
  };
  expectSteadyMemory(t, step);
});
