// Random numbers and dropout: Philox known answers and the stream layout every backend shares,
// statistics of 1e6 samples with bounds of about six standard errors, reproducibility after
// manualSeed and across getRngState/setRngState, thread-count independence, and dropout's mask,
// scale and gradient.
import t from 'tap';
import * as kiln from '../../lib/index';
import { native as core } from '../../lib/native';
import { gradcheck, randomTensor, values } from '../helpers/gradcheck';

const native = core as unknown as { philox(counter: number[], key: number[]): number[] };

const N = 1_000_000;

function moments(v: ArrayLike<number>): { mean: number; variance: number; skew: number; kurtosis: number } {
  let m = 0;
  for (let i = 0; i < v.length; i++) m += v[i];
  m /= v.length;
  let m2 = 0, m3 = 0, m4 = 0;
  for (let i = 0; i < v.length; i++) {
    const d = v[i] - m, d2 = d * d;
    m2 += d2;
    m3 += d2 * d;
    m4 += d2 * d2;
  }
  m2 /= v.length;
  m3 /= v.length;
  m4 /= v.length;
  return { mean: m, variance: m2, skew: m3 / m2 ** 1.5, kurtosis: m4 / (m2 * m2) };
}

/** Pearson's chi-square statistic of counts against equal expected counts. */
function chiSquare(counts: number[]): number {
  const total = counts.reduce((a, b) => a + b, 0);
  const e = total / counts.length;
  return counts.reduce((s, c) => s + ((c - e) * (c - e)) / e, 0);
}

/** Kolmogorov-Smirnov distance of the samples from the uniform distribution on [0, 1). */
function ksUniform(v: ArrayLike<number>): number {
  const s = Float64Array.from(v).sort();
  let d = 0;
  for (let i = 0; i < s.length; i++) d = Math.max(d, (i + 1) / s.length - s[i], s[i] - i / s.length);
  return d;
}

t.test('Philox4x32-10 matches the Random123 known-answer vectors', async (t) => {
  const kat: Array<[number[], number[], number[]]> = [
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]],
  ];
  for (const [ctr, key, want] of kat) t.same(native.philox(ctr, key), want);
});

t.test('element i of a fill takes word i of the stream of (seed, offset)', async (t) => {
  const seed = 0x1234_5678_9abcn;
  kiln.manualSeed(seed);
  const first = kiln.rand([3]); // advances the offset by one block
  t.same(kiln.getRngState(), { seed: seed.toString(), offset: '1' });
  const x = values(kiln.rand([10]));
  const key = [Number(seed & 0xffffffffn), Number(seed >> 32n)];
  const expect: number[] = [];
  for (let b = 0; b < 3; b++) {
    const w = native.philox([1 + b, 0, 0, 0], key);
    for (const word of w) expect.push(Math.floor(word / 256) / 2 ** 24);
  }
  t.same(x, expect.slice(0, 10), 'uniform float32 = (word >> 8) * 2^-24 from blocks offset, offset + 1, ...');
  t.same(values(first), native.philox([0, 0, 0, 0], key).slice(0, 3).map((w) => Math.floor(w / 256) / 2 ** 24));
  t.same(kiln.getRngState().offset, '4', 'ten float32 values use three blocks');
});

t.test('blocks consumed per call', async (t) => {
  kiln.manualSeed(1);
  const steps: Array<[() => unknown, number]> = [
    [() => kiln.rand([5]), 2], // 5 words
    [() => kiln.rand([5], { dtype: 'float64' }), 3], // 10 words
    [() => kiln.randn([4]), 1],
    [() => kiln.randn([3], { dtype: 'float64' }), 2], // 6 words
    [() => kiln.randint(0, 9, [3]), 2], // 64 bits each
    [() => kiln.dropout(kiln.ones([9]), 0.5), 3],
    [() => kiln.rand([0]), 0],
  ];
  let offset = 0;
  for (const [f, blocks] of steps) {
    f();
    offset += blocks;
    t.equal(kiln.getRngState().offset, String(offset));
  }
});

t.test('rand: uniform on [0, 1), mean, variance, chi-square and KS bounds', async (t) => {
  kiln.manualSeed(2024);
  for (const dtype of ['float32', 'float64'] as const) {
    const v = kiln.rand([N], { dtype }).dataSync() as Float32Array | Float64Array;
    let lo = Infinity, hi = -Infinity;
    for (const x of v) {
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
    }
    t.ok(lo >= 0 && hi < 1, `${dtype}: values in [0, 1) (min ${lo}, max ${hi})`);
    const m = moments(v);
    t.ok(Math.abs(m.mean - 0.5) < 6 * Math.sqrt(1 / 12 / N), `${dtype}: mean ${m.mean}`);
    t.ok(Math.abs(m.variance - 1 / 12) < 6 * Math.sqrt((1 / 80 - 1 / 144) / N), `${dtype}: variance ${m.variance}`);
    const counts = new Array(100).fill(0);
    for (const x of v) counts[Math.floor(x * 100)]++;
    const chi = chiSquare(counts);
    t.ok(chi < 150, `${dtype}: chi-square ${chi.toFixed(1)} with 99 degrees of freedom (p ≈ 7e-4 above 150)`);
    const d = ksUniform(v);
    t.ok(d < 1.95 / Math.sqrt(N), `${dtype}: KS distance ${d} (critical ${1.95 / Math.sqrt(N)} at p = 0.001)`);
  }
});

t.test('uniform(low, high) and half precision stay inside the half-open range', async (t) => {
  const u = values(kiln.uniform([100000], -3, 5));
  t.ok(Math.min(...u) >= -3 && Math.max(...u) < 5, 'in [-3, 5)');
  t.ok(Math.abs(u.reduce((a, b) => a + b, 0) / u.length - 1) < 0.05, 'mean near 1');
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const h = values(kiln.rand([100000], { dtype }));
    t.ok(Math.min(...h) >= 0 && Math.max(...h) < 1, `${dtype}: in [0, 1) (max ${Math.max(...h)})`);
    const near = values(kiln.uniform([100000], 0.999, 1, { dtype }));
    t.ok(near.every((x) => x < 1), `${dtype}: rounding never reaches high`);
  }
  t.throws(() => kiln.uniform([2], 1, 1), kiln.ValueError);
  t.throws(() => kiln.uniform([2], 0, Infinity), kiln.ValueError);
  t.throws(() => kiln.uniform([2], -3e38, 3e38), { name: 'ValueError', message: /too wide for float32/ });
});

t.test('randn: standard normal moments of 1e6 samples', async (t) => {
  kiln.manualSeed(7);
  for (const dtype of ['float32', 'float64'] as const) {
    const v = kiln.randn([N], { dtype }).dataSync() as Float32Array | Float64Array;
    const m = moments(v);
    t.ok(Math.abs(m.mean) < 6 / Math.sqrt(N), `${dtype}: mean ${m.mean}`);
    t.ok(Math.abs(m.variance - 1) < 6 * Math.sqrt(2 / N), `${dtype}: variance ${m.variance}`);
    t.ok(Math.abs(m.skew) < 6 * Math.sqrt(6 / N), `${dtype}: skewness ${m.skew}`);
    t.ok(Math.abs(m.kurtosis - 3) < 6 * Math.sqrt(24 / N), `${dtype}: kurtosis ${m.kurtosis}`);
    let within = 0;
    for (const x of v) if (Math.abs(x) < 1) within++;
    const p = 0.6826894921370859;
    t.ok(Math.abs(within / N - p) < 6 * Math.sqrt((p * (1 - p)) / N), `${dtype}: P(|z| < 1) = ${within / N}`);
  }
  const s = moments(values(kiln.normal([200000], 2, 3)));
  t.ok(Math.abs(s.mean - 2) < 0.05 && Math.abs(Math.sqrt(s.variance) - 3) < 0.05, `normal(2, 3): ${s.mean}, ${Math.sqrt(s.variance)}`);
  t.throws(() => kiln.normal([2], 0, -1), kiln.ValueError);
});

t.test('randint covers its range, never leaves it, and is uniform', async (t) => {
  kiln.manualSeed(11);
  for (const dtype of ['int64', 'int32'] as const) {
    const v = values(kiln.randint(-5, 7, [N], { dtype }));
    const counts = new Array(12).fill(0);
    let outside = 0;
    for (const x of v) {
      if (x < -5 || x >= 7 || !Number.isInteger(x)) outside++;
      else counts[x + 5]++;
    }
    t.equal(outside, 0, `${dtype}: never outside [-5, 7)`);
    t.ok(counts.every((c) => c > 0), `${dtype}: every value appears`);
    const chi = chiSquare(counts);
    t.ok(chi < 35, `${dtype}: chi-square ${chi.toFixed(2)} with 11 degrees of freedom (p < 3e-4 above 35)`);
  }
  t.same(kiln.randint(0, 5, [3]).dtype, 'int64');
  t.same(values(kiln.randint(3, 4, [5])), [3, 3, 3, 3, 3]);
  const big = values(kiln.randint(0, 2 ** 53 - 1, [100000], { dtype: 'float64' }));
  t.ok(big.every((x) => x >= 0 && x < 2 ** 53 - 1 && Number.isInteger(x)), 'range of 2^53 - 1');
  const m = big.reduce((a, b) => a + b, 0) / big.length / 2 ** 53;
  t.ok(Math.abs(m - 0.5) < 6 * Math.sqrt(1 / 12 / big.length), `range of 2^53 - 1: mean / 2^53 = ${m}`);
  const edge = values(kiln.randint(-(2 ** 31), 2 ** 31, [1000], { dtype: 'int32' }));
  t.ok(edge.every((x) => x >= -(2 ** 31) && x < 2 ** 31), 'full int32 range');
  t.throws(() => kiln.randint(5, 5, [2]), kiln.ValueError);
  t.throws(() => kiln.randint(0.5, 5, [2]), kiln.ValueError);
  t.throws(() => kiln.randint(0, 2 ** 31 + 1, [2], { dtype: 'int32' }), kiln.ValueError);
  t.throws(() => kiln.randint(0, 2, [2], { dtype: 'bool' }), kiln.DTypeError);
});

t.test('manualSeed repeats runs; different seeds and successive calls differ', async (t) => {
  const run = () => [kiln.rand([50]), kiln.randn([50], { dtype: 'float64' }), kiln.randint(0, 1000, [50]), kiln.dropout(kiln.ones([50]), 0.5)].map(values);
  kiln.manualSeed(42);
  const a = run();
  kiln.manualSeed(42);
  const b = run();
  t.same(a, b, 'same seed, same numbers');
  kiln.manualSeed(43);
  const c = run();
  a.forEach((xs, i) => t.notSame(xs, c[i], `seed 43 differs from 42 (draw ${i})`));
  t.notSame(values(kiln.rand([50])), values(kiln.rand([50])), 'successive calls differ');
  kiln.manualSeed(5);
  const long = values(kiln.rand([1000]));
  kiln.manualSeed(5);
  t.same(values(kiln.rand([100])), long.slice(0, 100), 'a prefix does not depend on the fill size');
  kiln.manualSeed(-1);
  t.equal(kiln.initialSeed(), 2n ** 64n - 1n, 'negative seeds wrap modulo 2^64');
  t.throws(() => kiln.manualSeed(1.5), kiln.ValueError);
});

t.test('getRngState / setRngState checkpoint and resume the stream', async (t) => {
  kiln.manualSeed(99);
  kiln.rand([17]);
  const state = JSON.parse(JSON.stringify(kiln.getRngState())) as kiln.RngState;
  const after = [kiln.randn([30]), kiln.randint(0, 9, [7])].map(values);
  kiln.manualSeed(1);
  kiln.rand([3]);
  kiln.setRngState(state);
  t.same([kiln.randn([30]), kiln.randint(0, 9, [7])].map(values), after, 'resumed stream repeats');
  t.throws(() => kiln.setRngState({ seed: '-1', offset: '0' }), kiln.ValueError);
  t.throws(() => kiln.setRngState({ seed: 'x', offset: '0' }), kiln.ValueError);
  t.throws(() => kiln.setRngState({ seed: '1', offset: (2n ** 64n).toString() }), kiln.ValueError);
});

t.test('values do not depend on the thread count', async (t) => {
  const draw = () => {
    kiln.manualSeed(314);
    const x = randomTensor([1000, 1000], 3, -1, 1, 'float32').t();
    return [kiln.rand([N]), kiln.randn([N]), kiln.randn([N / 2], { dtype: 'float64' }), kiln.randint(-9, 9, [N]), kiln.dropout(x, 0.25)]
      .map((v) => Array.from(v.dataSync() as ArrayLike<number | bigint>, Number));
  };
  kiln.setNumThreads(1);
  const one = draw();
  kiln.setNumThreads(2);
  const two = draw();
  ['rand', 'randn', 'randn float64', 'randint', 'dropout (transposed input)'].forEach((name, i) => {
    t.ok(one[i].every((v, k) => Object.is(v, two[i][k])), `${name}: identical with 1 and 2 threads`);
  });
});

t.test('creation options and the *Like forms', async (t) => {
  const r = kiln.rand([2, 3], { requiresGrad: true });
  t.ok(r.requiresGrad && r.isLeaf);
  t.same(r.shape, [2, 3]);
  t.equal(kiln.randn([4], { dtype: 'float64' }).dtype, 'float64');
  const state = kiln.getRngState();
  t.throws(() => kiln.randint(0, 3, [2], { requiresGrad: true }), kiln.AutogradError);
  t.same(kiln.getRngState(), state, 'a refused call draws nothing');
  t.throws(() => kiln.rand([2], { dtype: 'int32' }), { name: 'DTypeError', message: /uniform: dtype int32/ });
  t.throws(() => kiln.randn([-1]), kiln.ShapeError);
  const base = kiln.zeros([3, 2], { dtype: 'float64' });
  t.same([kiln.randLike(base).shape, kiln.randLike(base).dtype], [[3, 2], 'float64']);
  t.same([kiln.randnLike(base, { dtype: 'float32' }).dtype], ['float32']);
  const ri = kiln.randintLike(kiln.zeros([4], { dtype: 'int32' }), 0, 3);
  t.same([ri.shape, ri.dtype], [[4], 'int32']);
  t.ok(values(ri).every((v) => v >= 0 && v < 3));
});

t.test('dropout: fraction kept, scale, and the same mask in backward', async (t) => {
  kiln.manualSeed(3);
  for (const [p, dtype] of [[0.3, 'float32'], [0.5, 'float64'], [0.9, 'float32']] as const) {
    const x = kiln.ones([N], { dtype, requiresGrad: true });
    const y = kiln.dropout(x, p);
    const yv = values(y);
    const scale = dtype === 'float32' ? Math.fround(1 / (1 - p)) : 1 / (1 - p);
    let kept = 0, bad = 0;
    for (const v of yv) {
      if (v !== 0) kept++;
      if (v !== 0 && v !== scale) bad++;
    }
    t.equal(bad, 0, `p=${p} ${dtype}: kept values are scaled by 1/(1-p) exactly`);
    const sd = Math.sqrt((p * (1 - p)) / N);
    t.ok(Math.abs(kept / N - (1 - p)) < 6 * sd, `p=${p} ${dtype}: fraction kept ${kept / N}`);
    const g = randomTensor([N], 4, -1, 1, dtype);
    y.backward(g);
    const gv = values(g), xg = values(x.grad!);
    let mismatch = 0;
    for (let i = 0; i < N; i++) {
      const want = yv[i] !== 0 ? gv[i] * scale : 0;
      if (Math.abs(xg[i] - want) > 1e-6 * (1 + Math.abs(want))) mismatch++;
    }
    t.equal(mismatch, 0, `p=${p} ${dtype}: gradient = grad * mask / (1 - p)`);
  }
});

t.test('dropout gradient by finite differences, strided input, edge cases and errors', async (t) => {
  const x = randomTensor([4, 6], 5);
  const r = gradcheck((a) => {
    kiln.manualSeed(17); // the same mask at every evaluation
    return kiln.dropout(a.t(), 0.4);
  }, [x]);
  t.ok(r.ok, r.detail);

  const xt = randomTensor([30, 20], 6).t();
  const y = kiln.dropout(xt, 0.5);
  const xv = values(xt.contiguous()), yv = values(y);
  t.ok(yv.every((v, i) => v === 0 || Math.abs(v - 2 * xv[i]) < 1e-12), 'transposed input: each output is 0 or 2x');

  const z = kiln.ones([3], { requiresGrad: true });
  t.equal(kiln.dropout(z, 0), z, 'p = 0 returns the input');
  t.equal(kiln.dropout(z, 0.5, false), z, 'eval returns the input');
  t.equal(z.dropout(0.7, false), z, 'method form');
  const before = kiln.getRngState();
  const all = kiln.dropout(z, 1);
  t.same(values(all), [0, 0, 0], 'p = 1 gives zeros');
  t.same(kiln.getRngState(), before, 'p = 1 draws nothing');
  all.backward(kiln.ones([3]));
  t.same(values(z.grad!), [0, 0, 0], 'p = 1 gradient is zero');
  for (const p of [-0.1, 1.5, NaN]) {
    t.throws(() => kiln.dropout(z, p), { name: 'ValueError', message: /dropout: probability has to be between 0 and 1/ });
  }
  t.throws(() => kiln.dropout(kiln.tensor([1, 2]), 0.5), kiln.DTypeError);
  const h = values(kiln.dropout(kiln.ones([1000], { dtype: 'bfloat16' }), 0.5));
  t.ok(h.every((v) => v === 0 || v === 2), 'bfloat16 dropout');
});
