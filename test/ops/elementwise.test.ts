// Elementwise ops: forwards against plain TypeScript references (broadcasting, scalars, promotion,
// non-contiguous inputs, odd and large sizes), gradients by finite differences in float64, errors.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { native } from '../../lib/native';
import { gradcheck, randomTensor, rng, values } from '../helpers/gradcheck';

type Layout = [string, Tensor];

function randomValues(n: number, seed: number, lo: number, hi: number, int: boolean): number[] {
  const r = rng(seed);
  return Array.from({ length: n }, () => (int ? Math.floor(lo + (hi - lo) * r()) : lo + (hi - lo) * r()));
}

/** The same logical values laid out contiguously, transposed (last two dims) and sliced with a step. */
function layouts(vals: number[], shape: number[], dtype: kiln.DType): Layout[] {
  const out: Layout[] = [['contiguous', kiln.tensor(vals, { shape, dtype })]];
  const nd = shape.length;
  if (nd >= 2) {
    const [m, n] = [shape[nd - 2], shape[nd - 1]];
    const batch = vals.length / (m * n) || 0;
    const tv = new Array<number>(vals.length);
    for (let b = 0; b < batch; b++)
      for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) tv[b * m * n + j * m + i] = vals[b * m * n + i * n + j];
    const tshape = [...shape.slice(0, -2), n, m];
    out.push(['transposed', kiln.tensor(tv, { shape: tshape, dtype }).transpose(-1, -2)]);
  }
  if (nd >= 1) {
    const wide = [...shape.slice(0, -1), shape[nd - 1] * 2];
    const wv = new Array<number>(vals.length * 2).fill(0);
    vals.forEach((v, i) => (wv[2 * i] = v));
    out.push(['sliced', kiln.tensor(wv, { shape: wide, dtype }).slice(-1, 0, undefined, 2)]);
  }
  return out;
}

/** NumPy broadcasting reference: out[i] = f(a[ia], b[ib]). */
function broadcastRef(a: number[], as: number[], b: number[], bs: number[], f: (x: number, y: number) => number) {
  const nd = Math.max(as.length, bs.length);
  const pad = (s: number[]) => [...new Array(nd - s.length).fill(1), ...s];
  const pa = pad(as), pb = pad(bs);
  const shape = pa.map((d, i) => Math.max(d, pb[i]));
  const n = shape.reduce((x, y) => x * y, 1);
  const vals: number[] = [];
  for (let i = 0; i < n; i++) {
    let rem = i, ia = 0, ib = 0, sa = 1, sb = 1;
    for (let d = nd - 1; d >= 0; d--) {
      const k = rem % shape[d];
      rem = Math.floor(rem / shape[d]);
      if (pa[d] !== 1) ia += k * sa;
      if (pb[d] !== 1) ib += k * sb;
      sa *= pa[d];
      sb *= pb[d];
    }
    vals.push(f(a[ia], b[ib]));
  }
  return { shape, vals };
}

function close(got: number[], want: number[], rtol: number, atol = rtol): string | null {
  if (got.length !== want.length) return `length ${got.length} vs ${want.length}`;
  for (let i = 0; i < got.length; i++) {
    const [g, w] = [got[i], want[i]];
    if (Number.isNaN(w) ? !Number.isNaN(g) : !(Math.abs(g - w) <= atol + rtol * Math.abs(w))) return `element ${i}: ${g} vs ${w}`;
  }
  return null;
}

const f32 = (x: number) => Math.fround(x);

const SHAPE_PAIRS: Array<[number[], number[]]> = [
  [[3, 4], [3, 4]],
  [[3, 1], [1, 4]],
  [[2, 3, 5], [5]],
  [[7, 33], [7, 1]],
  [[4], []],
  [[], [2, 3]],
  [[300, 257], [257]],
];

t.test('add, sub, mul, div broadcast over layouts and dtypes', async (t) => {
  const ops: Array<[string, (a: Tensor, b: Tensor) => Tensor, (x: number, y: number) => number, boolean]> = [
    ['add', (a, b) => a.add(b), (x, y) => x + y, true],
    ['add alpha', (a, b) => kiln.add(a, b, 3), (x, y) => x + 3 * y, true],
    ['sub', (a, b) => a.sub(b), (x, y) => x - y, true],
    ['sub alpha', (a, b) => a.sub(b, 2), (x, y) => x - 2 * y, true],
    ['mul', (a, b) => a.mul(b), (x, y) => x * y, true],
    ['div', (a, b) => a.div(b), (x, y) => x / y, false],
  ];
  let seed = 1;
  for (const dtype of ['float32', 'float64', 'int32', 'int64'] as const) {
    const int = dtype.startsWith('int');
    for (const [as, bs] of SHAPE_PAIRS) {
      const an = as.reduce((x, y) => x * y, 1), bn = bs.reduce((x, y) => x * y, 1);
      const av = randomValues(an, seed++, -50, 50, int);
      const bv = randomValues(bn, seed++, 1, 9, int);
      for (const [la, A] of layouts(av, as, dtype)) {
        for (const [lb, B] of layouts(bv, bs, dtype).slice(0, 2)) {
          for (const [name, f, ref, keepsInt] of ops) {
            const out = f(A, B);
            const want = broadcastRef(av, as, bv, bs, ref);
            const outDtype = int && !keepsInt ? 'float32' : dtype;
            const rounded = dtype === 'float32' || outDtype === 'float32' ? want.vals.map(f32) : want.vals;
            // float32 results may differ by an ulp of the operands (|a| <= 50) where they cancel.
            const err = close(values(out), rounded, 1e-6, dtype === 'float32' ? 1e-5 : 1e-12);
            if (err || out.dtype !== outDtype || out.shape.join() !== want.shape.join()) {
              t.fail(`${name} ${dtype} ${la}[${as}] ${lb}[${bs}]: ${err ?? ''} dtype ${out.dtype} shape [${out.shape}]`);
            }
          }
        }
      }
    }
  }
  t.pass('all combinations checked');
});

t.test('scalars on either side', async (t) => {
  const x = kiln.tensor([[1, 2], [4, 8]], { dtype: 'float32' });
  t.same(x.add(2).toArray(), [[3, 4], [6, 10]]);
  t.same(x.add(2, 3).toArray(), [[7, 8], [10, 14]]);
  t.same(x.sub(1).toArray(), [[0, 1], [3, 7]]);
  t.same(kiln.sub(1, x).toArray(), [[0, -1], [-3, -7]]);
  t.same(kiln.sub(1, x, 2).toArray(), [[-1, -3], [-7, -15]]);
  t.same(kiln.add(1, x).toArray(), [[2, 3], [5, 9]]);
  t.same(x.mul(0.5).toArray(), [[0.5, 1], [2, 4]]);
  t.same(kiln.mul(3, x).toArray(), [[3, 6], [12, 24]]);
  t.same(x.div(4).toArray(), [[0.25, 0.5], [1, 2]]);
  t.same(kiln.div(8, x).toArray(), [[8, 4], [2, 1]]);
  t.equal(x.add(2).dtype, 'float32');
  const i = kiln.tensor([1, 2, 3]);
  t.equal(i.add(2).dtype, 'int64');
  t.same(i.add(2).toArray(), [3, 4, 5]);
  t.equal(i.add(0.5).dtype, 'float32');
  t.same(i.add(0.5).toArray(), [1.5, 2.5, 3.5]);
  t.equal(i.div(2).dtype, 'float32');
  t.same(i.div(2).toArray(), [0.5, 1, 1.5]);
  t.same(kiln.div(3, i).toArray(), [3, 1.5, 1].map(f32));
  const i32 = kiln.tensor([1, 2], { dtype: 'int32' });
  t.equal(i32.mul(3).dtype, 'int32');
  t.equal(kiln.tensor([true, false]).add(1).dtype, 'int64');
  t.same(kiln.tensor([true, false]).add(1).toArray(), [2, 1]);
});

t.test('type promotion like PyTorch', async (t) => {
  const f32t = kiln.tensor([1.5, 2], { dtype: 'float32' });
  const f64t = kiln.tensor([1, 2], { dtype: 'float64' });
  const i32t = kiln.tensor([1, 2], { dtype: 'int32' });
  const i64t = kiln.tensor([3, 4]);
  const bt = kiln.tensor([true, false]);
  t.equal(f32t.add(f64t).dtype, 'float64');
  t.equal(i32t.add(i64t).dtype, 'int64');
  t.equal(i64t.mul(f32t).dtype, 'float32');
  t.same(i64t.mul(f32t).toArray(), [4.5, 8]);
  t.equal(i32t.div(i64t).dtype, 'float32');
  t.same(i32t.div(i64t).toArray(), [1 / 3, 0.5].map(f32));
  t.equal(bt.add(bt).dtype, 'bool');
  t.same(bt.add(bt).toArray(), [true, false]);
  t.same(bt.mul(kiln.tensor([true, true])).toArray(), [true, false]);
  t.equal(bt.add(i32t).dtype, 'int32');
  // A 0-d tensor decides only when it is of a higher category.
  t.equal(f32t.add(kiln.scalar(2, { dtype: 'float64' })).dtype, 'float32');
  t.equal(i32t.add(kiln.scalar(2, { dtype: 'float64' })).dtype, 'float64');
  t.equal(i32t.add(kiln.scalar(2, { dtype: 'int64' })).dtype, 'int32');
  t.equal(kiln.scalar(2, { dtype: 'float64' }).add(kiln.scalar(1, { dtype: 'float32' })).dtype, 'float64');
  t.equal(f32t.add(kiln.tensor([1], { dtype: 'float64' })).dtype, 'float64');
});

t.test('half precision computes in float32', async (t) => {
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const a = kiln.tensor([1, 2, 3, 4], { dtype });
    const b = kiln.tensor([0.5, 0.25, 2, 8], { dtype });
    t.equal(a.mul(b).dtype, dtype);
    t.same(values(a.mul(b)), [0.5, 0.5, 6, 32]);
    t.same(values(a.add(1)), [2, 3, 4, 5]);
    t.same(values(a.div(b)), [2, 8, 1.5, 0.5]);
    t.same(values(a.neg()), [-1, -2, -3, -4]);
  }
});

t.test('neg, exp, log on layouts, expanded views and integer inputs', async (t) => {
  const ops: Array<[string, (x: Tensor) => Tensor, (v: number) => number, number]> = [
    ['neg', (x) => x.neg(), (v) => -v, -3],
    ['exp', (x) => x.exp(), Math.exp, -3],
    ['log', (x) => x.log(), Math.log, 0.01],
  ];
  for (const dtype of ['float32', 'float64'] as const) {
    for (const shape of [[5], [3, 7], [2, 65, 129]]) {
      const n = shape.reduce((a, b) => a * b, 1);
      for (const [name, f, ref, lo] of ops) {
        const vals = randomValues(n, n, lo, 3, false);
        for (const [layout, x] of layouts(vals, shape, dtype)) {
          const want = vals.map(ref).map(dtype === 'float32' ? f32 : (v: number) => v);
          const err = close(values(f(x)), want, dtype === 'float32' ? 2e-6 : 1e-14);
          t.equal(err, null, `${name} ${dtype} ${layout} [${shape}]`);
        }
      }
    }
  }
  const e = kiln.tensor([[1, 2, 3]], { dtype: 'float64' }).expand(2, 3);
  t.same(values(e.exp()), [1, 2, 3, 1, 2, 3].map(Math.exp));
  t.equal(kiln.tensor([1, 2]).exp().dtype, 'float32');
  t.same(kiln.tensor([1, 4], { dtype: 'int32' }).neg().toArray(), [-1, -4]);
  t.equal(kiln.tensor([1, 4], { dtype: 'int32' }).neg().dtype, 'int32');
});

t.test('large contiguous operands use every thread and stay exact', async (t) => {
  const n = 1 << 20;
  const av = randomValues(n, 7, -1, 1, false), bv = randomValues(n, 8, -1, 1, false);
  const a = kiln.tensor(Float32Array.from(av)), b = kiln.tensor(Float32Array.from(bv));
  const got = a.add(b).dataSync();
  let bad = 0;
  for (let i = 0; i < n; i++) if (got[i] !== f32(f32(av[i]) + f32(bv[i]))) bad++;
  t.equal(bad, 0);
  const s = a.mul(b.slice(0, 0, 1).expand(n)).dataSync();
  t.equal(s[n - 1], f32(f32(av[n - 1]) * f32(bv[0])));
});

t.test('gradients (finite differences, float64)', async (t) => {
  const a = randomTensor([3, 4], 1);
  const b = randomTensor([4], 2, 0.5, 2);
  const c = randomTensor([3, 1], 3, 0.5, 2);
  const p = randomTensor([3, 4], 4, 0.5, 2);
  const cases: Array<[string, (...xs: Tensor[]) => Tensor, Tensor[]]> = [
    ['add broadcast', (x, y) => x.add(y), [a, b]],
    ['add alpha', (x, y) => kiln.add(x, y, -2.5), [a, c]],
    ['sub broadcast', (x, y) => x.sub(y), [c, a]],
    ['sub alpha', (x, y) => x.sub(y, 3), [a, b]],
    ['mul broadcast', (x, y) => x.mul(y), [c, b]],
    ['mul same', (x, y) => x.mul(y), [a, p]],
    ['div broadcast', (x, y) => x.div(y), [a, c]],
    ['div same', (x, y) => y.div(x), [p, a]],
    ['scalar add/sub', (x) => kiln.sub(2, x.add(3), 0.5), [a]],
    ['scalar mul/div', (x) => kiln.div(2, x.mul(3).div(4)), [p]],
    ['neg exp log', (x) => x.neg().exp().log(), [a]],
    ['log', (x) => x.log(), [p]],
    ['transposed input', (x, y) => x.t().mul(y.t()).exp(), [a, p]],
    ['sliced input', (x) => x.slice(1, 0, undefined, 2).div(x.slice(1, 1, undefined, 2)), [p]],
    ['same tensor twice', (x) => x.mul(x).add(x), [a]],
    ['0-d operand', (x, y) => x.mul(y.sum()), [a, b]],
  ];
  for (const [name, f, inputs] of cases) {
    const r = gradcheck(f, inputs);
    t.ok(r.ok, `${name}: ${r.detail}`);
  }
});

t.test('gradients flow through promotion casts', async (t) => {
  const x = kiln.tensor([1, 2, 3], { dtype: 'float32', requiresGrad: true });
  const y = kiln.tensor([2, 2, 2], { dtype: 'float64' });
  const z = x.mul(y);
  t.equal(z.dtype, 'float64');
  z.sum().backward();
  t.equal(x.grad!.dtype, 'float32');
  t.same(x.grad!.toArray(), [2, 2, 2]);
});

t.test('errors name the op, the shapes and the dtypes', async (t) => {
  const a = kiln.zeros([2, 3]), b = kiln.zeros([4]);
  t.throws(() => a.add(b), { name: 'ShapeError', message: /add: shapes \[2, 3\] and \[4\] cannot be broadcast/ });
  t.throws(() => a.mul(b), kiln.ShapeError);
  t.throws(() => kiln.add(1, 2), { name: 'ValueError', message: /add: expects at least one tensor/ });
  t.throws(() => a.add('x' as unknown as number), kiln.ValueError);
  t.throws(() => a.add(1, NaN), kiln.ValueError);
  const bt = kiln.tensor([true]);
  t.throws(() => bt.sub(bt), { name: 'DTypeError', message: /sub: subtraction of bool/ });
  t.throws(() => bt.neg(), { name: 'DTypeError', message: /neg/ });
  t.throws(() => kiln.tensor([1, 2]).add(kiln.tensor([1, 2]), 0.5), { name: 'DTypeError', message: /alpha 0.5 .* int64/ });
  const d = kiln.zeros([2]);
  d.dispose();
  t.throws(() => d.add(1), kiln.DisposedError);
  t.throws(() => kiln.zeros([2]).mul(d), kiln.DisposedError);
});

t.test('native entry points check their arguments', async (t) => {
  const N = native as unknown as {
    unaryOps: Record<string, number>;
    binaryOps: Record<string, number>;
    unary(op: number, x: unknown, out: unknown, s0: number, s1: number): void;
    binary(op: number, a: unknown, b: unknown, out: unknown, s0: number, s1: number): void;
  };
  const a = kiln.zeros([2, 3]), b = kiln.zeros([3]), c = kiln.zeros([2, 3], { dtype: 'float64' });
  const i = kiln.zeros([2, 3], { dtype: 'int32' });
  t.throws(() => N.binary(N.binaryOps.add, a._h, b._h, a._h, 1, 0), { name: 'ShapeError', message: /add: second operand has shape \[3\]/ });
  t.throws(() => N.binary(N.binaryOps.add, a._h, c._h, a._h, 1, 0), { name: 'DTypeError', message: /float32 and float64/ });
  t.throws(() => N.binary(N.binaryOps.div, i._h, i._h, i._h, 0, 0), { name: 'DTypeError', message: /div: dtype int32/ });
  t.throws(() => N.unary(N.unaryOps.exp, a._h, c._h, 0, 0), { name: 'DTypeError', message: /exp: output dtype float64/ });
  t.throws(() => N.unary(999, a._h, a._h, 0, 0), { name: 'ValueError', message: /unknown op code/ });
  t.throws(() => N.unary(N.unaryOps.add_scalar, i._h, i._h, Infinity, 0), { name: 'ValueError', message: /does not fit/ });
  t.throws(() => N.unary(N.unaryOps.neg, a._h, {}, 0, 0), kiln.ValueError);
});
