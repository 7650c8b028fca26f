// clipGradNorm against norms computed here (2, 1, 3, infinity) over several gradients of mixed
// dtypes and sizes (some larger than one native block), clipping only above maxNorm, strided
// gradients, non-finite norms, and bad arguments.
import t, { Test } from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
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
