// Reductions: forwards against plain TypeScript references over every dim set, keepdim, strided
// inputs and dtypes; accuracy of long float32 sums; gradients by finite differences; errors.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { native } from '../../lib/native';
import { sumToShape } from '../../lib/ops/reduce';
import { gradcheck, randomTensor, rng, values } from '../helpers/gradcheck';

/** Reference reduction of row-major vals over dims: each output folds its elements in row-major order. */
function reduceRef(vals: number[], shape: number[], dims: number[], fold: (xs: number[]) => number): number[] {
  const kept = shape.map((s, i) => (dims.includes(i) ? 1 : s));
  const groups = new Map<number, number[]>();
  for (let i = 0; i < vals.length; i++) {
    let rem = i, o = 0, stride = 1;
    for (let d = shape.length - 1; d >= 0; d--) {
      const k = rem % shape[d];
      rem = Math.floor(rem / shape[d]);
      if (!dims.includes(d)) o += k * stride;
      stride *= kept[d];
    }
    if (!groups.has(o)) groups.set(o, []);
    groups.get(o)!.push(vals[i]);
  }
  const n = kept.reduce((a, b) => a * b, 1);
  return Array.from({ length: n }, (_, o) => fold(groups.get(o) ?? []));
}

/** Every subset of the dims of an ndim tensor. */
function dimSets(ndim: number): number[][] {
  const out: number[][] = [];
  for (let m = 1; m < 1 << ndim; m++) out.push([...Array(ndim).keys()].filter((d) => m & (1 << d)));
  return out;
}

/** Values of shape laid out three ways: contiguous, as a permutation of a contiguous tensor, and sliced. */
function layouts(vals: number[], shape: number[], dtype: kiln.DType): Array<[string, Tensor]> {
  const c = kiln.tensor(vals, { shape, dtype });
  const rev = [...shape.keys()].reverse();
  const permuted = c.permute(rev).contiguous().permute(rev);
  const wide = kiln.cat([c, c], -1).slice(-1, 0, shape[shape.length - 1]);
  return [['contiguous', c], ['permuted', permuted], ['sliced', wide]];
}

const sumOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

function close(got: number[], want: number[], tol: number): string | null {
  if (got.length !== want.length) return `length ${got.length} vs ${want.length}`;
  for (let i = 0; i < got.length; i++) {
    if (Number.isNaN(want[i]) ? !Number.isNaN(got[i]) : !(Math.abs(got[i] - want[i]) <= tol * (1 + Math.abs(want[i])))) {
      return `element ${i}: ${got[i]} vs ${want[i]}`;
    }
  }
  return null;
}

t.test('sum and mean over every dim set, keepdim, layouts and dtypes', async (t) => {
  const r = rng(3);
  for (const shape of [[5], [4, 3], [3, 5, 7], [2, 3, 1, 4]]) {
    const n = shape.reduce((a, b) => a * b, 1);
    for (const dtype of ['float32', 'float64', 'int32', 'int64'] as const) {
      const vals = Array.from({ length: n }, () => (dtype.startsWith('int') ? Math.floor(r() * 20 - 10) : r() * 2 - 1));
      for (const [layout, x] of layouts(vals, shape, dtype)) {
        for (const dims of dimSets(shape.length)) {
          for (const keepdim of [false, true]) {
            const s = x.sum(dims, keepdim);
            const want = reduceRef(vals, shape, dims, sumOf);
            const wantShape = keepdim ? shape.map((d, i) => (dims.includes(i) ? 1 : d)) : shape.filter((_, i) => !dims.includes(i));
            const tol = dtype === 'float32' ? 1e-6 : 1e-12;
            const err = close(values(s), want, tol);
            if (err || s.shape.join() !== wantShape.join() || s.dtype !== (dtype === 'float32' || dtype === 'float64' ? dtype : 'int64')) {
              t.fail(`sum ${dtype} ${layout} [${shape}] dims [${dims}] keepdim ${keepdim}: ${err} shape [${s.shape}] ${s.dtype}`);
            }
            if (dtype.startsWith('float')) {
              const m = x.mean(dims, keepdim);
              const e2 = close(values(m), reduceRef(vals, shape, dims, (xs) => sumOf(xs) / xs.length), tol);
              if (e2) t.fail(`mean ${dtype} ${layout} [${shape}] dims [${dims}]: ${e2}`);
            }
          }
        }
      }
    }
  }
  t.pass('checked');
});

t.test('sum defaults, negative dims, bool and 0-d inputs', async (t) => {
  const x = kiln.arange(6).reshape(2, 3);
  t.equal(x.sum().item(), 15);
  t.same(x.sum().shape, []);
  t.same(x.sum(-1).toArray(), [3, 12]);
  t.same(x.sum([-1, 0]).toArray(), 15);
  t.same(x.sum([]).toArray(), 15);
  t.same(x.sum(undefined, true).shape, [1, 1]);
  const b = kiln.tensor([[true, false, true], [true, true, true]]);
  t.equal(b.sum().dtype, 'int64');
  t.same(b.sum(1).toArray(), [2, 3]);
  t.equal(kiln.tensor([1, 2], { dtype: 'int32' }).sum().dtype, 'int64');
  const z = kiln.scalar(2.5);
  t.equal(z.sum().item(), 2.5);
  t.equal(z.sum(0).item(), 2.5);
  t.equal(z.mean(-1, true).item(), 2.5);
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const h = kiln.tensor([[1, 2], [3, 4]], { dtype });
    t.equal(h.sum(0).dtype, dtype);
    t.same(values(h.sum(0)), [4, 6]);
    t.same(values(h.mean()), [2.5]);
  }
  // Half inputs accumulate in double: 4096 ones sum exactly although 4097 is not a bfloat16.
  t.same(values(kiln.ones([4096], { dtype: 'bfloat16' }).sum()), [4096]);
});

t.test('empty reductions', async (t) => {
  const e = kiln.zeros([0, 3]);
  t.same(e.sum(0).toArray(), [0, 0, 0]);
  t.same(e.sum(1).shape, [0]);
  t.ok(Number.isNaN(e.mean().item()));
  t.equal(kiln.zeros([0], { dtype: 'int32' }).sum().item(), 0);
});

t.test('long float32 sums stay accurate', async (t) => {
  const n = 10_000_000;
  t.equal(kiln.full([n], 0.1).sum().item(), Math.fround(Math.fround(0.1) * n));
  const r = rng(11);
  const vals = new Float32Array(n);
  let exact = 0;
  for (let i = 0; i < n; i++) {
    vals[i] = r() * 2 - 0.5;
    exact += vals[i];
  }
  const x = kiln.tensor(vals);
  t.ok(Math.abs(x.sum().item() - exact) <= 1e-6 * Math.abs(exact), `sum ${x.sum().item()} vs ${exact}`);
  t.ok(Math.abs(x.mean().item() - exact / n) <= 1e-6 * Math.abs(exact / n));
  // Column sums over many rows and row sums of a transposed view take the other code paths.
  const m = x.reshape(10_000, 1000);
  const cols = m.sum(0).dataSync(), rows = m.t().sum(0).dataSync();
  let c0 = 0, r0 = 0;
  for (let i = 0; i < 10_000; i++) c0 += vals[i * 1000];
  for (let j = 0; j < 1000; j++) r0 += vals[j];
  t.ok(Math.abs(cols[0] - c0) <= 1e-6 * Math.abs(c0));
  t.ok(Math.abs(rows[0] - r0) <= 1e-6 * Math.abs(r0));
});

t.test('sumToShape reduces a broadcast back', async (t) => {
  const x = kiln.arange(24, undefined, 1, { dtype: 'float64' }).reshape(2, 3, 4);
  t.same(sumToShape(x, [3, 1]).toArray(), [[60], [92], [124]]);
  t.same(sumToShape(x, [4]).toArray(), [60, 66, 72, 78]);
  t.same(sumToShape(x, [1, 3, 4]).shape, [1, 3, 4]);
  t.equal(sumToShape(x, []).item(), 276);
  t.equal(sumToShape(x, [2, 3, 4]), x);
  t.throws(() => sumToShape(x, [2, 4]), { name: 'ShapeError', message: /sumToShape: shape \[2, 3, 4\] is not a broadcast of \[2, 4\]/ });
  t.throws(() => sumToShape(x, [1, 1, 2, 3, 4]), kiln.ShapeError);
});

t.test('gradients (finite differences, float64)', async (t) => {
  const x = randomTensor([3, 4, 2], 1);
  const cases: Array<[string, (a: Tensor) => Tensor]> = [
    ['sum all', (a) => a.sum()],
    ['sum dim', (a) => a.sum(1)],
    ['sum dims keepdim', (a) => a.sum([0, 2], true)],
    ['sum of transposed', (a) => a.transpose(0, 2).sum(0)],
    ['mean all', (a) => a.mean()],
    ['mean dims', (a) => a.mean([-1, 0])],
    ['mean keepdim', (a) => a.mean(1, true)],
    ['sumToShape', (a) => sumToShape(a, [4, 1])],
    ['expand backward', (a) => a.sum(1, true).expand(3, 5, 2).mul(a.slice(1, 0, 1))],
  ];
  for (const [name, f] of cases) {
    const r = gradcheck(f, [x]);
    t.ok(r.ok, `${name}: ${r.detail}`);
  }
});

t.test('errors', async (t) => {
  const x = kiln.zeros([2, 3]);
  t.throws(() => x.sum(2), { name: 'IndexError', message: /sum: dim 2 out of range/ });
  t.throws(() => x.sum([0, -2]), { name: 'IndexError', message: /repeats/ });
  t.throws(() => kiln.tensor([1, 2]).mean(), { name: 'DTypeError', message: /mean: expects a floating point tensor, got int64/ });
  const N = native as unknown as { reduceOps: Record<string, number>; reduce(op: number, x: unknown, out: unknown, dims: number[], p: number): void };
  const out = kiln.zeros([3]);
  t.throws(() => N.reduce(N.reduceOps.sum, x._h, out._h, [5], 0), { name: 'IndexError', message: /sum: dim 5 out of range/ });
  t.throws(() => N.reduce(N.reduceOps.sum, x._h, out._h, [0, 0], 0), { name: 'IndexError', message: /repeated/ });
  t.throws(() => N.reduce(N.reduceOps.sum, x._h, out._h, [1], 0), { name: 'ShapeError', message: /does not hold the 2 results/ });
  t.throws(() => N.reduce(N.reduceOps.sum, x._h, kiln.zeros([3], { dtype: 'int64' })._h, [0], 0), { name: 'DTypeError' });
  t.throws(() => N.reduce(N.reduceOps.mean, kiln.zeros([2], { dtype: 'int32' })._h, out._h, [0], 0), { name: 'DTypeError', message: /mean: dtype int32/ });
  t.throws(() => N.reduce(42, x._h, out._h, [0], 0), kiln.ValueError);
});

const maxOf = (xs: number[]) => xs.reduce((a, b) => (b > a || Number.isNaN(b) ? b : a), -Infinity);
const minOf = (xs: number[]) => xs.reduce((a, b) => (b < a || Number.isNaN(b) ? b : a), Infinity);
const argOf = (better: (x: number, y: number) => boolean) => (xs: number[]) => {
  let k = 0;
  for (let i = 1; i < xs.length; i++) if (better(xs[i], xs[k]) || (Number.isNaN(xs[i]) && !Number.isNaN(xs[k]))) k = i;
  return k;
};
const varOf = (c: number) => (xs: number[]) => {
  const m = sumOf(xs) / xs.length;
  return xs.reduce((a, x) => a + (x - m) ** 2, 0) / Math.max(0, xs.length - c);
};
const lseOf = (xs: number[]) => {
  const m = Math.max(...xs);
  if (!Number.isFinite(m)) return m;
  return m + Math.log(xs.reduce((a, x) => a + Math.exp(x - m), 0));
};

t.test('max, min, argmax, argmin, var, std, logsumexp, all, any against references', async (t) => {
  const r = rng(5);
  for (const shape of [[6], [4, 5], [3, 4, 7]]) {
    const n = shape.reduce((a, b) => a * b, 1);
    for (const dtype of ['float32', 'float64', 'int32', 'int64'] as const) {
      const int = dtype.startsWith('int');
      // Few distinct values so that ties are common.
      const vals = Array.from({ length: n }, () => (int ? Math.floor(r() * 6 - 3) : Math.round(r() * 12 - 6) / 4 + (r() < 0.5 ? 0 : r())));
      const cast = dtype === 'float32' ? vals.map(Math.fround) : vals;
      for (const [layout, x] of layouts(vals, shape, dtype)) {
        for (const dims of dimSets(shape.length)) {
          const tag = `${dtype} ${layout} [${shape}] dims [${dims}]`;
          const check = (name: string, got: Tensor, want: number[], tol: number, dt: string) => {
            const err = close(values(got), want, tol);
            if (err || got.dtype !== dt) t.fail(`${name} ${tag}: ${err} ${got.dtype}`);
          };
          check('max', x.max(dims), reduceRef(cast, shape, dims, maxOf), 0, dtype);
          check('min', x.min(dims, true), reduceRef(cast, shape, dims, minOf), 0, dtype);
          check('all', x.all(dims), reduceRef(cast, shape, dims, (xs) => +xs.every((v) => v !== 0)), 0, 'bool');
          check('any', x.any(dims, true), reduceRef(cast, shape, dims, (xs) => +xs.some((v) => v !== 0)), 0, 'bool');
          if (dims.length === 1) {
            check('argmax', x.argmax(dims[0]), reduceRef(cast, shape, dims, argOf((a, b) => a > b)), 0, 'int64');
            check('argmin', x.argmin(dims[0], true), reduceRef(cast, shape, dims, argOf((a, b) => a < b)), 0, 'int64');
          }
          if (!int) {
            const tol = dtype === 'float32' ? 2e-6 : 1e-12;
            for (const c of [0, 1, 2]) {
              check(`var c=${c}`, x.var(dims, { correction: c }), reduceRef(cast, shape, dims, varOf(c)), tol, dtype);
            }
            check('std', x.std(dims, { keepdim: true }), reduceRef(cast, shape, dims, (xs) => Math.sqrt(varOf(1)(xs))), tol, dtype);
            check('logsumexp', x.logsumexp(dims), reduceRef(cast, shape, dims, lseOf), tol, dtype);
          }
        }
        t.same(values(x.argmax()), [argOf((a, b) => a > b)(cast)], `flattened argmax ${dtype} ${layout}`);
        t.same(values(x.argmin()), [argOf((a, b) => a < b)(cast)], `flattened argmin ${dtype} ${layout}`);
      }
    }
  }
  t.pass('checked');
});

t.test('special values: NaN, infinities, ties, bool and half inputs', async (t) => {
  const x = kiln.tensor([[1, NaN, 3, NaN], [-Infinity, -Infinity, -Infinity, -Infinity], [2, 5, 5, 1]], { dtype: 'float64' });
  t.same(values(x.max(1)).map(String), ['NaN', '-Infinity', '5']);
  t.same(values(x.min(1)).map(String), ['NaN', '-Infinity', '1']);
  t.same(values(x.argmax(1)), [1, 0, 1]);
  t.same(values(x.argmin(1)), [1, 0, 3]);
  t.same(values(x.logsumexp(1)).map(String), ['NaN', '-Infinity', String(lseOf([2, 5, 5, 1]))]);
  t.same(values(kiln.tensor([Infinity, 1, Infinity]).logsumexp(0)), [Infinity]);
  t.ok(Math.abs(kiln.tensor([1000, 1000], { dtype: 'float64' }).logsumexp(0).item() - (1000 + Math.LN2)) < 1e-12);
  t.ok(Math.abs(kiln.tensor([-1000, -1000], { dtype: 'float32' }).logsumexp(0).item() - (-1000 + Math.LN2)) < 1e-3);
  t.equal(kiln.tensor([3, 1]).logsumexp(0).dtype, 'float32');
  const b = kiln.tensor([[true, false], [true, true]]);
  t.same(b.all(1).toArray(), [false, true]);
  t.same(b.any(0).toArray(), [true, true]);
  t.same(b.max(1).toArray(), [true, true]);
  t.same(b.argmin(1).toArray(), [1, 0]);
  t.same(kiln.tensor([0, NaN]).all().toArray(), false);
  t.same(kiln.tensor([NaN]).all().toArray(), true);
  t.same(kiln.zeros([0]).all().toArray(), true);
  t.same(kiln.zeros([0]).any().toArray(), false);
  t.ok(Number.isNaN(kiln.zeros([0]).var().item()));
  t.ok(Number.isNaN(kiln.tensor([2.5]).var().item()));
  t.equal(kiln.tensor([2.5]).var(undefined, { correction: 0 }).item(), 0);
  t.same(kiln.zeros([2, 0]).logsumexp(1).toArray(), [-Infinity, -Infinity]);
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const h = kiln.tensor([[1, 4], [3, 2]], { dtype });
    t.same(values(h.max(1)), [4, 3]);
    t.same(values(h.argmax(0)), [1, 0]);
    t.same(values(h.var(1)), [4.5, 0.5]);
    t.same(values(h.any(1)), [1, 1]);
  }
  t.same(kiln.scalar(3).argmax().toArray(), 0);
  t.same(kiln.arange(6).reshape(2, 3).argmax(undefined, true).shape, [1, 1]);
});

t.test('large reductions split across threads and stay exact', async (t) => {
  const n = 3_000_017;
  const r = rng(9);
  const vals = new Float32Array(n);
  for (let i = 0; i < n; i++) vals[i] = 10_000 + r();
  vals[n - 5] = 10_002;
  vals[n - 3] = 10_002;
  const x = kiln.tensor(vals);
  t.equal(x.argmax().item(), n - 5);
  t.equal(x.max().item(), 10_002);
  t.equal(kiln.zeros([n]).argmax().item(), 0);
  let mean = 0;
  for (const v of vals) mean += v;
  mean /= n;
  let m2 = 0;
  for (const v of vals) m2 += (v - mean) ** 2;
  const v = x.var().item();
  t.ok(Math.abs(v - m2 / (n - 1)) <= 1e-5 * (m2 / (n - 1)), `var ${v} vs ${m2 / (n - 1)}`);
  const lse = x.sub(10_000).logsumexp(0).item();
  let s = 0;
  for (const val of vals) s += Math.exp(Math.fround(val - 10_000));
  t.ok(Math.abs(lse - Math.log(s)) < 1e-5, `logsumexp ${lse} vs ${Math.log(s)}`);
  // Few columns, many rows: the reduced dim is split into chunks whose states are combined.
  const m = x.slice(0, 0, 3_000_000).reshape(1_000_000, 3);
  const am = m.argmax(0).dataSync(), mx = m.max(0).dataSync();
  for (let j = 0; j < 3; j++) {
    let k = 0;
    for (let i = 1; i < 1_000_000; i++) if (vals[i * 3 + j] > vals[k * 3 + j]) k = i;
    t.equal(Number(am[j]), k, `column ${j} argmax`);
    t.equal(mx[j], vals[k * 3 + j]);
  }
});

t.test('gradients of max/min/var/std/logsumexp (finite differences, float64)', async (t) => {
  const x = randomTensor([3, 4, 5], 31);
  const cases: Array<[string, (a: Tensor) => Tensor]> = [
    ['max dim', (a) => a.max(1)],
    ['max all', (a) => a.max()],
    ['min dims keepdim', (a) => a.min([0, 2], true)],
    ['var', (a) => a.var(1)],
    ['var correction 0 all', (a) => a.var(undefined, { correction: 0 })],
    ['std', (a) => a.std([0, 2], { keepdim: true })],
    ['logsumexp', (a) => a.logsumexp(-1)],
    ['logsumexp dims', (a) => a.logsumexp([0, 1], true)],
    ['of a transposed view', (a) => a.transpose(0, 2).var(0).t().add(a.transpose(1, 2).logsumexp(1))],
  ];
  for (const [name, f] of cases) {
    const r = gradcheck(f, [x]);
    t.ok(r.ok, `${name}: ${r.detail}`);
  }
  // Tied maxima share the gradient evenly, like torch.amax.
  const tie = kiln.tensor([[1, 3, 3], [2, 2, 2]], { dtype: 'float64', requiresGrad: true });
  tie.max(1).sum().backward();
  t.same(tie.grad!.toArray(), [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]]);
  t.notOk(kiln.tensor([1.5], { requiresGrad: true }).argmax().requiresGrad);
});

t.test('errors of the other reductions', async (t) => {
  const x = kiln.zeros([2, 3]);
  t.throws(() => kiln.zeros([0, 3]).max(0), { name: 'IndexError', message: /max: cannot reduce over a zero-size dimension of a tensor of shape \[0, 3\]/ });
  t.throws(() => kiln.zeros([0]).argmin(), kiln.IndexError);
  t.same(kiln.zeros([0, 3]).max(1).shape, [0]);
  t.throws(() => x.argmax([0, 1] as unknown as number), { name: 'IndexError', message: /argmax: dim must be a single dimension/ });
  t.throws(() => x.argmax(2), kiln.IndexError);
  t.throws(() => kiln.tensor([1, 2]).var(), { name: 'DTypeError', message: /var: expects a floating point tensor, got int64/ });
  t.throws(() => x.std(0, { correction: NaN }), { name: 'ValueError', message: /std: correction must be a finite number/ });
  t.throws(() => x.logsumexp(3), kiln.IndexError);
  const N = native as unknown as { reduceOps: Record<string, number>; reduce(op: number, x: unknown, out: unknown, dims: number[], p: number): void };
  t.throws(() => N.reduce(N.reduceOps.max, kiln.zeros([0, 2])._h, kiln.zeros([2])._h, [0], 0), { name: 'IndexError', message: /zero-size/ });
  t.throws(() => N.reduce(N.reduceOps.argmax, x._h, kiln.zeros([3])._h, [0], 0), { name: 'DTypeError', message: /argmax: output dtype float32 should be int64/ });
});
