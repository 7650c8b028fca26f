// clipGradNorm against norms computed here (2, 1, 3, infinity) over several gradients of mixed
// dtypes and sizes (some larger than one native block), clipping only above maxNorm, strided
// gradients, non-finite norms, and bad arguments; the pieces it is built from (gradNormPartial,
// scaleGrads_), shards combining partials through reducePartial, and half-precision gradients.
import t, { Test } from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import * as optim from '../../lib/optim/index';
import { clipGradNorm } from '../../lib/optim/index';
import { rng } from '../helpers/gradcheck';

const vals = (x: Tensor): number[] => Array.from(x.to('float64').dataSync() as Float64Array);

function withGrads(sizes: number[], dtypes: kiln.DType[], seed: number): { params: Tensor[]; grads: number[][] } {
  const r = rng(seed);
  const grads = sizes.map((n) => Array.from({ length: n }, () => 4 * r() - 2));
  const params = sizes.map((n, i) => {
    const p = kiln.zeros([n], { dtype: dtypes[i], requiresGrad: true });
    p.grad = kiln.tensor(Float64Array.from(grads[i]), { dtype: dtypes[i] });
    return p;
  });
  // The reference uses the values as stored (float32 rounds).
  return { params, grads: params.map((p) => vals(p.grad!)) };
}

function refNorm(grads: number[][], p: number): number {
  const all = grads.flat().map(Math.abs);
  if (p === Infinity) return Math.max(...all);
  return all.reduce((s, x) => s + x ** p, 0) ** (1 / p);
}

function closeTo(t: Test, got: number, want: number, rtol: number, msg: string): void {
  t.ok(Math.abs(got - want) <= rtol * Math.abs(want), `${msg}: ${got} vs ${want}`);
}

t.test('the total norm over all gradients, for p = 2, 1, 3 and infinity', async (t) => {
  for (const p of [2, 1, 3, Infinity]) {
    const { params, grads } = withGrads([7, 100_000, 1], ['float32', 'float64', 'float32'], 11);
    const total = clipGradNorm(params, Infinity, p);
    t.equal(total.dtype, 'float32', 'in the first gradient\'s dtype');
    closeTo(t, total.item(), refNorm(grads, p), 1e-6, `p = ${p}`);
    t.same(params.map((q) => vals(q.grad!)), grads, 'maxNorm = Infinity leaves the gradients alone');
  }
});

t.test('gradients above maxNorm are scaled to it; below it they stay', async (t) => {
  const { params, grads } = withGrads([5, 70_000], ['float64', 'float64'], 12);
  const norm = refNorm(grads, 2);
  const total = clipGradNorm(params, 1.5);
  t.equal(total.dtype, 'float64');
  closeTo(t, total.item(), norm, 1e-12, 'returns the norm before clipping');
  const coef = 1.5 / (norm + 1e-6);
  const got = params.map((q) => vals(q.grad!));
  let worst = 0;
  grads.forEach((g, i) => g.forEach((x, k) => (worst = Math.max(worst, Math.abs(got[i][k] - x * coef)))));
  t.ok(worst < 1e-15, `scaled by maxNorm / (norm + 1e-6) (max error ${worst})`);
  closeTo(t, refNorm(got, 2), 1.5, 1e-6, 'the new norm is maxNorm');
  const again = clipGradNorm(params, 10);
  closeTo(t, again.item(), 1.5, 1e-6, 'a second call measures the clipped norm');
  t.same(params.map((q) => vals(q.grad!)), got, 'and leaves gradients below maxNorm unchanged');
});

t.test('the norm does not depend on the thread count', async (t) => {
  const { params } = withGrads([300_001, 12], ['float32', 'float32'], 13);
  const threads = kiln.buildInfo().threads;
  kiln.setNumThreads(1);
  const one = clipGradNorm(params, Infinity).item();
  kiln.setNumThreads(Math.max(2, threads));
  const many = clipGradNorm(params, Infinity).item();
  kiln.setNumThreads(threads);
  t.equal(many, one);
});

t.test('a single tensor, params without grads, strided gradients', async (t) => {
  const p = kiln.zeros([2, 2], { dtype: 'float64', requiresGrad: true });
  p.grad = kiln.tensor(Float64Array.from([3, 0, 4, 0]), { shape: [2, 2], dtype: 'float64' }).t();
  const none = kiln.zeros([3], { requiresGrad: true });
  const total = clipGradNorm([p, none], 1);
  t.equal(total.item(), 5);
  t.ok(p.grad!.isContiguous(), 'a strided gradient is replaced by a contiguous one');
  const g = vals(p.grad!);
  t.ok(Math.abs(g[0] - 0.6) < 1e-6 && Math.abs(g[1] - 0.8) < 1e-6 && g[2] === 0 && g[3] === 0, `clipped through the transpose: ${g}`);
  t.equal(none.grad, null);
  t.equal(clipGradNorm(none, 1).item(), 0, 'no gradients: norm 0');
  t.equal(clipGradNorm(p, Infinity, 1).item() > 0, true, 'a single tensor works');
});

t.test('non-finite norms and bad arguments', async (t) => {
  const p = kiln.zeros([3], { requiresGrad: true });
  p.grad = kiln.tensor([1, NaN, 2]);
  t.throws(() => clipGradNorm(p, 1, 2, { errorIfNonfinite: true }), kiln.ValueError);
  t.same(vals(p.grad), [1, NaN, 2], 'nothing scaled when it throws');
  t.ok(Number.isNaN(clipGradNorm(p, 1).item()), 'without the check the norm is NaN');
  const q = kiln.zeros([2], { requiresGrad: true });
  q.grad = kiln.tensor([1, 1]);
  t.throws(() => clipGradNorm(q, -1), kiln.ValueError);
  t.throws(() => clipGradNorm(q, 1, 0), kiln.ValueError);
  t.throws(() => clipGradNorm(q, 1, NaN), kiln.ValueError);
  const h = kiln.zeros([2], { dtype: 'bfloat16', requiresGrad: true });
  h.grad = kiln.zeros([2], { dtype: 'bfloat16' });
  t.throws(() => clipGradNorm([q, h], 1), kiln.DTypeError);
  t.same(vals(q.grad), [1, 1]);
});

t.test('gradNormPartial: sum |g|^p (the squared norm for p = 2), max |g| for infinity, without touching the gradients', async (t) => {
  for (const p of [2, 1, 3, Infinity]) {
    const { params, grads } = withGrads([7, 100_000, 1], ['float32', 'float64', 'float32'], 21);
    const partial = optim.gradNormPartial(params, p);
    t.equal(partial.dtype, 'float32');
    t.same(partial.shape, []);
    const want = p === Infinity ? refNorm(grads, p) : refNorm(grads, p) ** p;
    closeTo(t, partial.item(), want, 1e-6, `p = ${p}`);
  }
  const p = kiln.zeros([2, 2], { dtype: 'float64', requiresGrad: true });
  const strided = kiln.tensor(Float64Array.from([3, 0, 4, 0]), { shape: [2, 2], dtype: 'float64' }).t();
  p.grad = strided;
  const sq = optim.gradNormPartial([p, kiln.zeros([1], { requiresGrad: true })]);
  t.equal(sq.dtype, 'float64', 'float64 for float64 gradients');
  t.equal(sq.item(), 25, 'the squared norm');
  t.equal(p.grad, strided, 'a strided gradient is read, not replaced');
  t.equal(optim.gradNormPartial(kiln.zeros([1], { requiresGrad: true })).item(), 0, 'no gradients: 0');
  t.throws(() => optim.gradNormPartial(p, 0), kiln.ValueError);
});

t.test('scaleGrads_ multiplies every gradient in place by a number or a tensor read on the device', async (t) => {
  const { params, grads } = withGrads([5, 40_000], ['float32', 'float64'], 22);
  const none = kiln.zeros([3], { requiresGrad: true });
  const before = params.map((q) => q.grad);
  optim.scaleGrads_([...params, none], 0.5);
  t.same(params.map((q) => vals(q.grad!)), grads.map((g) => g.map((x) => x * 0.5)), 'by a number');
  t.ok(params.every((q, i) => q.grad === before[i]), 'the same gradient tensors');
  t.equal(none.grad, null, 'parameters without gradients are skipped');
  optim.scaleGrads_(params, kiln.tensor(4, { dtype: 'float64' }));
  t.same(params.map((q) => vals(q.grad!)), grads.map((g) => g.map((x) => x * 2)), 'by a 0-d tensor');
  t.throws(() => optim.scaleGrads_(params, kiln.tensor([1, 2], { dtype: 'float32' })), kiln.ShapeError, 'one element');
  t.throws(() => optim.scaleGrads_(params, kiln.tensor(1, { dtype: 'int32' })), kiln.DTypeError);
});

t.test('clipGradNorm over shards: reducePartial combines the partials, every shard clips by the global norm', async (t) => {
  for (const p of [2, Infinity]) {
    const whole = withGrads([9, 3000, 4, 70_000], ['float32', 'float32', 'float32', 'float32'], 23);
    const shards = [withGrads([9, 3000], ['float32', 'float32'], 23), withGrads([4, 70_000], ['float32', 'float32'], 23)];
    // The second shard's gradients are the whole run's last two.
    shards[1].params.forEach((q, i) => kiln.noGrad(() => q.grad!.copy_(whole.params[i + 2].grad!)));
    const want = clipGradNorm(whole.params, 1, p).item();
    const partials = shards.map((s) => optim.gradNormPartial(s.params, p).to('float64'));
    const allReduce = (mine: number) => (partial: Tensor) => {
      const other = partials[1 - mine];
      kiln.noGrad(() => (p === Infinity ? partial.copy_(kiln.maximum(partial, other)) : partial.add_(other)));
    };
    const norms = shards.map((s, i) => clipGradNorm(s.params, 1, p, { reducePartial: allReduce(i) }).item());
    norms.forEach((n) => closeTo(t, n, want, 1e-6, `p = ${p}: the global norm`));
    const got = shards.flatMap((s) => s.params.map((q) => vals(q.grad!)));
    const ref = whole.params.map((q) => vals(q.grad!));
    let worst = 0;
    got.forEach((g, i) => g.forEach((x, k) => (worst = Math.max(worst, Math.abs(x - ref[i][k])))));
    t.ok(worst < 1e-6, `p = ${p}: the shards' gradients clipped as the whole (max error ${worst})`);
  }
});

t.test('half-precision gradients are measured and clipped in float32', async (t) => {
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const { params, grads } = withGrads([6, 50_000], [dtype, dtype], 24);
    const norm = refNorm(grads, 2);
    const total = clipGradNorm(params, 1);
    t.equal(total.dtype, 'float32');
    closeTo(t, total.item(), norm, 1e-5, `${dtype}: the norm`);
    closeTo(t, refNorm(params.map((q) => vals(q.grad!)), 2), 1, 1e-2, `${dtype}: clipped to about maxNorm`);
  }
});
