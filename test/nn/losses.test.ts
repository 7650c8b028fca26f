// Losses against hand-computed values for every reduction, ignoreIndex and label smoothing,
// class weights, soft targets, bceWithLogits' stability at |x| = 100 and its gradient at 0,
// finite-difference gradients, the module forms and argument errors.
import t from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import { gradcheck, randomTensor, values } from '../helpers/gradcheck';
import { maxDiff } from './ref';

const f64 = (v: kiln.NestedArray) => kiln.tensor(v, { dtype: 'float64' });
const close = (a: number[], b: number[], tol = 1e-12) => maxDiff(a, b) < tol;
const logSumExp = (r: number[]) => Math.log(r.reduce((s, v) => s + Math.exp(v), 0));

t.test('mseLoss', async (t) => {
  const x = f64([[1, 2], [3, 4]]), y = f64([[1, 1], [1, 1]]);
  t.equal(nn.mseLoss(x, y).item(), 3.5);
  t.equal(nn.mseLoss(x, y, { reduction: 'sum' }).item(), 14);
  t.same(nn.mseLoss(x, y, { reduction: 'none' }).toArray(), [[0, 1], [4, 9]]);
  t.equal(new nn.MSELoss('sum').forward(x, y).item(), 14);
  const gc = gradcheck((a, b) => nn.mseLoss(a, b), [randomTensor([3, 2], 1), randomTensor([3, 2], 2)]);
  t.ok(gc.ok, gc.detail);
  t.throws(() => nn.mseLoss(x, f64([1, 1])), { name: 'ShapeError', message: /mseLoss: input \[2, 2\] and target \[2\]/ });
  t.throws(() => nn.mseLoss(x, y, { reduction: 'avg' as 'mean' }), kiln.ValueError);
});

t.test('crossEntropy: hand values, ignoreIndex, label smoothing, [N, C, d] layout, soft targets', async (t) => {
  const rows = [[1, 2, 3], [1, 0, -1], [0.5, 0.5, -2]];
  const x = f64(rows), tgt = kiln.tensor([2, 0, 1]);
  const each = rows.map((r, i) => logSumExp(r) - r[[2, 0, 1][i]]);
  t.ok(close([nn.crossEntropy(x, tgt).item()], [(each[0] + each[1] + each[2]) / 3]));
  t.ok(close(values(nn.crossEntropy(x, tgt, { reduction: 'none' })), each));
  t.ok(close([nn.crossEntropy(x, tgt, { reduction: 'sum' }).item()], [each[0] + each[1] + each[2]]));
  t.ok(close([nn.crossEntropy(x, kiln.tensor([2, -100, 1])).item()], [(each[0] + each[2]) / 2]), 'ignored rows leave the mean');
  t.ok(close([nn.crossEntropy(x, kiln.tensor([2, 7, 1]), { ignoreIndex: 7 }).item()], [(each[0] + each[2]) / 2]));
  const eps = 0.2;
  const smooth = rows.map((r, i) => (1 - eps) * each[i] + (eps / 3) * r.reduce((s, v) => s + (logSumExp(r) - v), 0));
  t.ok(close([nn.crossEntropy(x, tgt, { labelSmoothing: eps }).item()], [(smooth[0] + smooth[1] + smooth[2]) / 3]));
  // Classes along dim 1 of [N, C, d]: the same as moving them last.
  const x3 = randomTensor([2, 3, 4], 3, -2, 2), t3 = kiln.tensor([[0, 2, 1, 1], [2, 2, 0, 1]]);
  const flat = nn.crossEntropy(x3.permute(0, 2, 1).reshape(8, 3), t3.reshape(8), { reduction: 'none' });
  t.ok(close(values(nn.crossEntropy(x3, t3, { reduction: 'none' })), values(flat)));
  // Soft targets: one-hot probabilities equal class indices; smoothing mixes in the uniform distribution.
  const onehot = f64([[0, 0, 1], [1, 0, 0], [0, 1, 0]]);
  t.ok(close([nn.crossEntropy(x, onehot).item()], [nn.crossEntropy(x, tgt).item()]));
  t.ok(close([nn.crossEntropy(x, onehot, { labelSmoothing: eps }).item()], [nn.crossEntropy(x, tgt, { labelSmoothing: eps }).item()]));
  const gc = gradcheck((a, p) => nn.crossEntropy(a, p), [randomTensor([3, 4], 4), randomTensor([3, 4], 5, 0, 1)]);
  t.ok(gc.ok, gc.detail);
  t.equal(new nn.CrossEntropyLoss({ reduction: 'sum' }).forward(x, tgt).item(), nn.crossEntropy(x, tgt, { reduction: 'sum' }).item());
  t.throws(() => nn.crossEntropy(x, kiln.tensor([1, 2])), kiln.ShapeError);
  t.throws(() => nn.crossEntropy(x, tgt, { labelSmoothing: 1.5 }), kiln.ValueError);
});

t.test('nllLoss: picks -logp of the target, class weights, ignoreIndex, [N, C, d] layout', async (t) => {
  const lp = f64([[-0.1, -2, -3], [-1, -0.5, -4], [-2, -2, -0.2]]);
  const tgt = kiln.tensor([0, 1, 2]);
  t.ok(close([nn.nllLoss(lp, tgt).item()], [(0.1 + 0.5 + 0.2) / 3]));
  t.ok(close(values(nn.nllLoss(lp, tgt, { reduction: 'none' })), [0.1, 0.5, 0.2]));
  t.ok(close([nn.nllLoss(lp, kiln.tensor([0, -100, 2]), { reduction: 'sum' }).item()], [0.3]));
  const w = f64([1, 2, 3]);
  t.ok(close([nn.nllLoss(lp, tgt, { weight: w }).item()], [(0.1 * 1 + 0.5 * 2 + 0.2 * 3) / 6]), 'weighted mean divides by the summed weights');
  t.ok(close([nn.nllLoss(lp, kiln.tensor([0, 1, -100]), { weight: w }).item()], [(0.1 + 1) / 3]));
  const x3 = randomTensor([2, 3, 4], 6), t3 = kiln.tensor([[0, 2, 1, 1], [2, 2, 0, 1]]);
  t.ok(close(values(nn.nllLoss(x3.logSoftmax(1), t3, { reduction: 'none' })), values(nn.crossEntropy(x3, t3, { reduction: 'none' }))));
  const gc = gradcheck((a) => nn.nllLoss(a, kiln.tensor([1, -100, 0]), { weight: w }), [randomTensor([3, 3], 7)]);
  t.ok(gc.ok, gc.detail);
  const m = new nn.NLLLoss({ weight: f64([1, 2, 3]) });
  t.ok(close([m.forward(lp, tgt).item()], [nn.nllLoss(lp, tgt, { weight: w }).item()]));
  t.ok(m.stateDict().has('weight'), 'class weights are a buffer');
  t.throws(() => nn.nllLoss(lp, f64([0, 1, 2])), kiln.DTypeError);
  t.throws(() => nn.nllLoss(lp, tgt, { weight: f64([1, 2]) }), { name: 'ShapeError', message: /weight must be \[3\]/ });
  t.throws(() => nn.nllLoss(lp, kiln.tensor([0, 1])), kiln.ShapeError);
});

t.test('bceLoss: hand values, weights, logs clamped at -100', async (t) => {
  const p = f64([0.9, 0.2, 0.5]), y = f64([1, 0, 1]);
  const each = [-Math.log(0.9), -Math.log(0.8), -Math.log(0.5)];
  t.ok(close([nn.bceLoss(p, y).item()], [(each[0] + each[1] + each[2]) / 3]));
  t.ok(close(values(nn.bceLoss(p, y, { weight: f64([1, 2, 0]), reduction: 'none' })), [each[0], 2 * each[1], 0]));
  t.same(values(nn.bceLoss(f64([0, 1]), f64([1, 0]), { reduction: 'none' })), [100, 100]);
  const gc = gradcheck((a) => nn.bceLoss(a, f64([1, 0, 0.3])), [randomTensor([3], 8, 0.1, 0.9)]);
  t.ok(gc.ok, gc.detail);
  t.ok(close([new nn.BCELoss({ reduction: 'sum' }).forward(p, y).item()], [each[0] + each[1] + each[2]]));
});

t.test('bceWithLogits: stable at |x| = 100, exact gradient at 0, posWeight, module form', async (t) => {
  const softplus = (v: number) => Math.max(v, 0) + Math.log1p(Math.exp(-Math.abs(v)));
  const xs = [100, -100, 100, -100, 0, 2, -3.5];
  const ys = [1, 0, 0, 1, 1, 0, 0.3];
  const ref = xs.map((x, i) => softplus(x) - x * ys[i]);
  for (const dtype of ['float32', 'float64'] as const) {
    const x = kiln.tensor(xs, { dtype, requiresGrad: true }), y = kiln.tensor(ys, { dtype });
    const loss = nn.bceWithLogits(x, y, { reduction: 'none' });
    const v = values(loss);
    t.ok(v.every(Number.isFinite), `${dtype}: finite losses ${v}`);
    t.ok(close(v, ref, dtype === 'float32' ? 1e-5 : 1e-12), `${dtype}: ${v} vs ${ref}`);
    loss.sum().backward();
    const want = xs.map((xv, i) => 1 / (1 + Math.exp(-xv)) - ys[i]);
    t.ok(close(values(x.grad!), want, dtype === 'float32' ? 1e-6 : 1e-12), `${dtype}: gradient sigmoid(x) - y, ${values(x.grad!)}`);
  }
  t.equal(values(nn.bceWithLogits(f64([100]), f64([0])))[0], 100);
  const x = f64([0.5, -1, 2]), y = f64([1, 0, 1]), pw = f64([3, 1, 0.5]);
  const pws = [3, 1, 0.5], xv = [0.5, -1, 2], yv = [1, 0, 1];
  const wantPw = xv.map((v, i) => (1 - yv[i]) * v + (1 + (pws[i] - 1) * yv[i]) * softplus(-v));
  t.ok(close(values(nn.bceWithLogits(x, y, { posWeight: pw, reduction: 'none' })), wantPw));
  const gc = gradcheck((a, b) => nn.bceWithLogits(a, b, { posWeight: pw, weight: f64([1, 2, 0.5]) }), [randomTensor([3], 9, -3, 3), randomTensor([3], 10, 0, 1)]);
  t.ok(gc.ok, gc.detail);
  const m = new nn.BCEWithLogitsLoss({ posWeight: f64([3, 1, 0.5]) });
  t.ok(close([m.forward(x, y).item()], [wantPw.reduce((a, b) => a + b, 0) / 3]));
  t.same([...m.stateDict().keys()], ['posWeight']);
  t.ok(close(values(nn.bceWithLogits(x, y, { reduction: 'none' })), xv.map((v, i) => softplus(v) - v * yv[i])));
  t.throws(() => nn.bceWithLogits(x, f64([1, 0])), kiln.ShapeError);
});
