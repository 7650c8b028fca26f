// Basic layers against plain references, their initialization statistics, seeded repeatability,
// RMSNorm's composed gradient, Embedding's padding row, dropout modes and the init functions.
import t from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import { gradcheck, randomTensor, values } from '../helpers/gradcheck';
import { geluErf, geluTanh, layerNormRows, linear, mat, maxDiff, stats } from './ref';

t.test('Linear: x W^T + b on fixed weights, any leading dims, non-contiguous input', async (t) => {
  const lin = new nn.Linear(3, 2, { dtype: 'float64' });
  lin.loadStateDict({ weight: kiln.tensor([[1, 2, 3], [-1, 0.5, 0]], { dtype: 'float64' }), bias: kiln.tensor([0.1, -0.2], { dtype: 'float64' }) });
  const x = randomTensor([4, 3], 1);
  const ref = linear(mat(x), [[1, 2, 3], [-1, 0.5, 0]], [0.1, -0.2]);
  t.ok(maxDiff(mat(lin.forward(x)), ref) < 1e-12);
  const xt = randomTensor([3, 4], 2).t();
  t.ok(maxDiff(mat(lin.forward(xt)), linear(mat(xt), [[1, 2, 3], [-1, 0.5, 0]], [0.1, -0.2])) < 1e-12);
  t.same(lin.forward(randomTensor([2, 5, 3], 3)).shape, [2, 5, 2]);
  t.throws(() => lin.forward(randomTensor([2, 4], 4)), { name: 'ShapeError', message: /Linear: expects inputs with last dim 3, got shape \[2, 4\]/ });
  t.throws(() => new nn.Linear(0, 2), kiln.ValueError);
  const noBias = new nn.Linear(3, 2, { bias: false });
  t.same(noBias.namedParameters().map(([n]) => n), ['weight']);
});

t.test('Linear init is U(-1/sqrt(in), 1/sqrt(in)) for weight and bias', async (t) => {
  const lin = new nn.Linear(400, 300);
  const w = stats(values(lin.weight)), b = stats(values(lin.bias!));
  const bound = 1 / 20;
  t.ok(w.min >= -bound && w.max <= bound, `weights within ±${bound}: [${w.min}, ${w.max}]`);
  t.ok(w.min < -0.99 * bound && w.max > 0.99 * bound, 'weights fill the range');
  t.ok(Math.abs(w.mean) < 1e-3, `weight mean ${w.mean}`);
  t.ok(Math.abs(w.std - bound / Math.sqrt(3)) < 5e-4, `weight std ${w.std} vs ${bound / Math.sqrt(3)}`);
  t.ok(b.min >= -bound && b.max <= bound && b.std > 0.02, `bias within the same bound, spread ${b.std}`);
});

t.test('Embedding: rows of weight, N(0, 1) init, paddingIdx row zero and without gradient', async (t) => {
  const emb = new nn.Embedding(1000, 64);
  const s = stats(values(emb.weight));
  t.ok(Math.abs(s.mean) < 0.02 && Math.abs(s.std - 1) < 0.02, `mean ${s.mean}, std ${s.std}`);
  const small = new nn.Embedding(5, 3, { paddingIdx: 1, dtype: 'float64' });
  const w = mat(small.weight);
  t.same(w[1], [0, 0, 0]);
  const idx = kiln.tensor([[4, 1], [1, 0]]);
  const out = small.forward(idx);
  t.same(out.shape, [2, 2, 3]);
  t.same(values(out), [...w[4], ...w[1], ...w[1], ...w[0]]);
  out.sum().backward();
  t.same(mat(small.weight.grad!), [[1, 1, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1]]);
  t.throws(() => new nn.Embedding(5, 3, { paddingIdx: 5 }), kiln.ValueError);
  const pre = nn.Embedding.fromPretrained(kiln.tensor([[1.5, 2], [3, 4]]));
  t.notOk(pre.weight.requiresGrad, 'fromPretrained freezes by default');
  t.same(values(pre.forward(kiln.tensor([1]))), [3, 4]);
});

t.test('parameter init repeats after manualSeed', async (t) => {
  kiln.manualSeed(42);
  const a = new nn.Linear(8, 8), ea = new nn.Embedding(4, 4);
  kiln.manualSeed(42);
  const b = new nn.Linear(8, 8), eb = new nn.Embedding(4, 4);
  t.same(values(a.weight), values(b.weight));
  t.same(values(ea.weight), values(eb.weight));
  t.notSame(values(a.weight), values(new nn.Linear(8, 8).weight));
});

t.test('LayerNorm and RMSNorm against plain references; RMSNorm gradients', async (t) => {
  const x = randomTensor([2, 3, 5], 5, -2, 2);
  const ln = new nn.LayerNorm(5, { dtype: 'float64', eps: 1e-5 });
  const w = randomTensor([5], 6), b = randomTensor([5], 7);
  ln.loadStateDict({ weight: w, bias: b });
  const rows = mat(x.reshape(6, 5));
  t.ok(maxDiff(mat(ln.forward(x).reshape(6, 5)), layerNormRows(rows, values(w), values(b))) < 1e-10);
  t.same(new nn.LayerNorm([3, 5], { elementwiseAffine: false }).parameters(), []);
  t.same(new nn.LayerNorm(4, { bias: false }).namedParameters().map(([n]) => n), ['weight']);
  t.throws(() => ln.forward(randomTensor([2, 4], 1)), kiln.ShapeError);

  const rms = new nn.RMSNorm(5, { dtype: 'float64', eps: 1e-6 });
  rms.loadStateDict({ weight: w });
  const wv = values(w);
  const ref = rows.map((r) => {
    const ms = r.reduce((s, v) => s + v * v, 0) / r.length;
    return r.map((v, j) => (v / Math.sqrt(ms + 1e-6)) * wv[j]);
  });
  t.ok(maxDiff(mat(rms.forward(x).reshape(6, 5)), ref) < 1e-10);
  const gc = gradcheck((xx, ww) => nn.rmsNorm(xx, [3, 5], ww, 1e-6), [randomTensor([2, 3, 5], 8), randomTensor([3, 5], 9)]);
  t.ok(gc.ok, gc.detail);
  // Default eps is the dtype's machine epsilon: a zero row stays finite.
  t.same(values(nn.rmsNorm(kiln.zeros([1, 4]), 4)), [0, 0, 0, 0]);
});

t.test('Dropout: identity in eval mode, zeroes ~p and rescales in training', async (t) => {
  kiln.manualSeed(3);
  const d = new nn.Dropout(0.3);
  const x = kiln.ones([20000]);
  const y = values(d.forward(x));
  const zeros = y.filter((v) => v === 0).length / y.length;
  t.ok(Math.abs(zeros - 0.3) < 0.015, `zero fraction ${zeros}`);
  t.ok(y.every((v) => v === 0 || Math.abs(v - 1 / 0.7) < 1e-6));
  d.eval();
  t.same(values(d.forward(x)), values(x));
  t.throws(() => new nn.Dropout(1.5), kiln.ValueError);
});

t.test('activation modules', async (t) => {
  const xs = [-3, -1, -0.25, 0, 0.5, 2];
  const x = kiln.tensor(xs, { dtype: 'float64' });
  const close = (m: nn.TensorModule, f: (v: number) => number) => maxDiff(values(m.forward(x)), xs.map(f)) < 1e-7;
  t.ok(close(new nn.ReLU(), (v) => Math.max(v, 0)));
  t.ok(close(new nn.GELU(), geluErf));
  t.ok(close(new nn.GELU({ approximate: 'tanh' }), geluTanh));
  t.ok(close(new nn.Sigmoid(), (v) => 1 / (1 + Math.exp(-v))));
  t.ok(close(new nn.Tanh(), Math.tanh));
  t.ok(close(new nn.SiLU(), (v) => v / (1 + Math.exp(-v))));
  t.equal(new nn.Identity().forward(x), x);
  t.throws(() => new nn.GELU({ approximate: 'fast' as 'tanh' }), kiln.ValueError);
});

t.test('init functions: bounds and spreads of xavier / kaiming, gains, fans', async (t) => {
  const w = kiln.empty([200, 300]);
  nn.init.xavierUniform_(w);
  const a = Math.sqrt(6 / 500);
  let s = stats(values(w));
  t.ok(s.min >= -a && s.max <= a && Math.abs(s.std - a / Math.sqrt(3)) < 1e-3, `xavier uniform std ${s.std}`);
  nn.init.xavierNormal_(w, 2);
  s = stats(values(w));
  t.ok(Math.abs(s.std - 2 * Math.sqrt(2 / 500)) < 2e-3, `xavier normal std ${s.std}`);
  nn.init.kaimingNormal_(w, { nonlinearity: 'relu' });
  s = stats(values(w));
  t.ok(Math.abs(s.std - Math.sqrt(2 / 300)) < 2e-3, `kaiming normal std ${s.std}`);
  nn.init.kaimingUniform_(w, { mode: 'fanOut', nonlinearity: 'relu' });
  s = stats(values(w));
  const bound = Math.sqrt(6 / 200);
  t.ok(s.min >= -bound && s.max <= bound && s.max > 0.99 * bound, 'kaiming uniform bound uses fanOut');
  nn.init.normal_(w, 3, 0.5);
  s = stats(values(w));
  t.ok(Math.abs(s.mean - 3) < 0.01 && Math.abs(s.std - 0.5) < 0.01);
  nn.init.uniform_(w, 2, 4);
  s = stats(values(w));
  t.ok(s.min >= 2 && s.max < 4 && Math.abs(s.mean - 3) < 0.01);
  t.same(values(nn.init.ones_(kiln.empty([3]))), [1, 1, 1]);
  t.same(values(nn.init.constant_(kiln.empty([2]), 7)), [7, 7]);
  t.equal(nn.init.calculateGain('tanh'), 5 / 3);
  t.equal(nn.init.calculateGain('leaky_relu', 0), Math.SQRT2);
  t.same(nn.init.computeFans(kiln.empty([4, 3, 5])), { fanIn: 15, fanOut: 20 });
  t.throws(() => nn.init.computeFans(kiln.empty([4])), kiln.ShapeError);
  t.throws(() => nn.init.calculateGain('swish' as 'relu'), kiln.ValueError);
  // In-place init on a parameter works outside noGrad and records nothing.
  const p = new nn.Linear(2, 2).weight;
  nn.init.zeros_(p);
  t.ok(p.isLeaf && p.gradFn === null);
  t.same(values(p), [0, 0, 0, 0]);
});
