// Layer normalization: forward against a plain reference (with and without weight/bias, 2-D
// normalizedShape, strided inputs, float32 stability), gradients by finite differences in float64,
// the fused backward on many rows against reference sums, and errors; addLayerNorm (the residual
// add fused into the norm's forward) against x.add(delta) then layerNorm, forward and gradients.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { native } from '../../lib/native';
import { addLayerNorm } from '../../lib/ops/norm';
import { expectSteadyMemory, gradcheck, maxAbsDiff, randomTensor, values } from '../helpers/gradcheck';

/** Layer norm of row-major rows of M values, in float64. */
function refLayerNorm(x: number[], M: number, w: number[] | null, b: number[] | null, eps = 1e-5): number[] {
  const out = new Array<number>(x.length);
  for (let r = 0; r < x.length / M; r++) {
    const row = x.slice(r * M, (r + 1) * M);
    const mu = row.reduce((a, c) => a + c, 0) / M;
    const v = row.reduce((a, c) => a + (c - mu) ** 2, 0) / M;
    const rs = 1 / Math.sqrt(v + eps);
    for (let i = 0; i < M; i++) out[r * M + i] = (row[i] - mu) * rs * (w ? w[i] : 1) + (b ? b[i] : 0);
  }
  return out;
}

/** Gradients of layer norm given gy: [gx, gw, gb]. */
function refLayerNormGrad(x: number[], gy: number[], M: number, w: number[] | null, eps = 1e-5): [number[], number[], number[]] {
  const gx = new Array<number>(x.length);
  const gw = new Array<number>(M).fill(0), gb = new Array<number>(M).fill(0);
  for (let r = 0; r < x.length / M; r++) {
    const row = x.slice(r * M, (r + 1) * M);
    const mu = row.reduce((a, c) => a + c, 0) / M;
    const rs = 1 / Math.sqrt(row.reduce((a, c) => a + (c - mu) ** 2, 0) / M + eps);
    const xhat = row.map((c) => (c - mu) * rs);
    const g = xhat.map((_, i) => gy[r * M + i] * (w ? w[i] : 1));
    const mg = g.reduce((a, c) => a + c, 0) / M;
    const mgx = g.reduce((a, c, i) => a + c * xhat[i], 0) / M;
    for (let i = 0; i < M; i++) {
      gx[r * M + i] = rs * (g[i] - mg - xhat[i] * mgx);
      gw[i] += gy[r * M + i] * xhat[i];
      gb[i] += gy[r * M + i];
    }
  }
  return [gx, gw, gb];
}

t.test('layerNorm matches the reference, with and without weight and bias', async (t) => {
  let seed = 1;
  const cases: Array<[number[], number[]]> = [
    [[4, 7], [7]],
    [[2, 3, 5], [5]],
    [[2, 3, 5], [3, 5]],
    [[3, 129], [129]],
    [[6], [6]],
    [[5, 2, 1], [2, 1]],
  ];
  for (const dtype of ['float64', 'float32'] as const) {
    for (const [shape, ns] of cases) {
      const M = ns.reduce((a, b) => a * b, 1);
      const x = randomTensor(shape, seed++, -3, 3, dtype);
      const w = randomTensor(ns, seed++, 0.5, 1.5, dtype);
      const b = randomTensor(ns, seed++, -1, 1, dtype);
      for (const [wt, bt] of [[w, b], [w, null], [null, b], [null, null]] as Array<[Tensor | null, Tensor | null]>) {
        const y = kiln.layerNorm(x, ns.length === 1 ? ns[0] : ns, wt, bt);
        t.same(y.shape, shape);
        t.equal(y.dtype, dtype);
        const want = refLayerNorm(values(x), M, wt && values(wt), bt && values(bt));
        const err = maxAbsDiff(values(y), want);
        t.ok(err < (dtype === 'float64' ? 1e-12 : 3e-6), `${dtype} ${JSON.stringify(shape)} ns ${JSON.stringify(ns)} w=${!!wt} b=${!!bt}: ${err}`);
      }
    }
  }
  // The method form and a custom eps.
  const x = randomTensor([3, 4], 50);
  t.ok(maxAbsDiff(values(x.layerNorm([4], null, null, 0.1)), refLayerNorm(values(x), 4, null, null, 0.1)) < 1e-12);
});

t.test('layerNorm on strided inputs and parameters', async (t) => {
  const base = randomTensor([6, 4, 5], 3, -2, 2);
  const wBase = randomTensor([2, 5], 4);
  const w = wBase.select(0, 1);
  const b = randomTensor([5, 2], 5).select(1, 0);
  t.notOk(b.isContiguous());
  for (const [name, x] of [['transpose', base.transpose(0, 1)], ['slice', base.slice(0, 0, 6, 2)], ['expand', base.slice(1, 0, 1).expand(6, 3, 5)]] as Array<[string, Tensor]>) {
    t.notOk(x.isContiguous(), name);
    const y = kiln.layerNorm(x, [5], w, b);
    t.ok(maxAbsDiff(values(y), refLayerNorm(values(x), 5, values(w), values(b))) < 1e-12, name);
  }
});

t.test('layerNorm in float32 is accurate for rows with a large mean', async (t) => {
  const M = 4096;
  const vals = Array.from({ length: 2 * M }, (_, i) => 10000 + Math.sin(i * 0.37) * 0.5);
  const x = kiln.tensor(Float32Array.from(vals), { shape: [2, M] });
  const y = values(kiln.layerNorm(x, M));
  const want = refLayerNorm(values(x), M, null, null);
  const err = maxAbsDiff(y, want);
  t.ok(err < 1e-5, `max error ${err} against float64 (values of unit scale)`);
});

t.test('layerNorm gradients (finite differences, float64)', async (t) => {
  const x = randomTensor([3, 2, 4], 10, -2, 2);
  const w = randomTensor([4], 11, 0.5, 1.5);
  const b = randomTensor([4], 12);
  const w2 = randomTensor([2, 4], 13, 0.5, 1.5);
  const b2 = randomTensor([2, 4], 14);
  const cases: Array<[string, (...a: Tensor[]) => Tensor, Tensor[]]> = [
    ['weight and bias', (a, c, d) => kiln.layerNorm(a, 4, c, d), [x, w, b]],
    ['weight only', (a, c) => kiln.layerNorm(a, [4], c), [x, w]],
    ['bias only', (a, d) => kiln.layerNorm(a, [4], null, d), [x, b]],
    ['no affine', (a) => kiln.layerNorm(a, [4]), [x]],
    ['2-D normalizedShape', (a, c, d) => kiln.layerNorm(a, [2, 4], c, d), [x, w2, b2]],
    ['2-D normalizedShape, no affine', (a) => kiln.layerNorm(a, [2, 4]), [x]],
    ['transposed input', (a, c, d) => kiln.layerNorm(a.transpose(0, 1), [4], c, d), [x, w, b]],
    ['permuted output gradient', (a, c, d) => kiln.layerNorm(a, [4], c, d).permute(2, 0, 1), [x, w, b]],
  ];
  for (const [name, f, inputs] of cases) {
    const r = gradcheck(f, inputs);
    t.ok(r.ok, `${name}: ${r.detail}`);
  }
  // Only the parameters need gradients (x held constant), and only x.
  t.ok(gradcheck((a, c, d) => kiln.layerNorm(a, 4, c, d), [x, w, b], { skip: [0] }).ok, 'parameters only');
  t.ok(gradcheck((a, c, d) => kiln.layerNorm(a, 4, c, d), [x, w, b], { skip: [1, 2] }).ok, 'input only');
});

t.test('layerNorm backward over many rows combines per-chunk weight and bias sums', async (t) => {
  for (const dtype of ['float64', 'float32'] as const) {
    const R = 1500, M = 48;
    const x = randomTensor([R, M], 20, -2, 2, dtype).requiresGrad_();
    const w = randomTensor([M], 21, 0.5, 1.5, dtype).requiresGrad_();
    const b = randomTensor([M], 22, -1, 1, dtype).requiresGrad_();
    const gy = randomTensor([R, M], 23, -1, 1, dtype);
    kiln.layerNorm(x, M, w, b).backward(gy);
    const [gx, gw, gb] = refLayerNormGrad(values(x), values(gy), M, values(w));
    const tol = dtype === 'float64' ? 1e-10 : 1e-3;
    t.ok(maxAbsDiff(values(x.grad!), gx) < (dtype === 'float64' ? 1e-12 : 1e-5), `${dtype} grad x`);
    t.ok(maxAbsDiff(values(w.grad!), gw) < tol, `${dtype} grad weight`);
    t.ok(maxAbsDiff(values(b.grad!), gb) < tol, `${dtype} grad bias`);
  }
});

t.test('layerNorm in bfloat16 / float16 on the CPU computes in float32 and rounds once', async (t) => {
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const x = randomTensor([5, 16], 3, -2, 2, 'float32').to(dtype).requiresGrad_();
    const w = randomTensor([16], 4, 0.5, 1.5, 'float32').to(dtype).requiresGrad_();
    const b = randomTensor([16], 6, -1, 1, 'float32').to(dtype).requiresGrad_();
    const [xf, wf, bf] = [x, w, b].map((p) => p.detach().to('float32').requiresGrad_());
    const y = kiln.layerNorm(x, 16, w, b);
    const yf = kiln.layerNorm(xf, 16, wf, bf);
    t.equal(y.dtype, dtype);
    t.same(values(y), values(yf.to(dtype)), `forward ${dtype}`);
    const g = randomTensor([5, 16], 7, -1, 1, 'float32');
    y.backward(g.to(dtype));
    yf.backward(g.to(dtype).to('float32'));
    for (const [p, pf, name] of [[x, xf, 'x'], [w, wf, 'weight'], [b, bf, 'bias']] as const) {
      t.equal(p.grad!.dtype, dtype);
      t.same(values(p.grad!), values(pf.grad!.to(dtype)), `${name} gradient ${dtype}`);
    }
  }
});

t.test('layerNorm errors', async (t) => {
  const x = kiln.zeros([2, 3, 4]);
  t.throws(() => kiln.layerNorm(x, [3]), /layerNorm: normalizedShape \[3\] does not match the trailing dims of input shape \[2, 3, 4\]/);
  t.throws(() => kiln.layerNorm(x, [4, 3]), kiln.ShapeError);
  t.throws(() => kiln.layerNorm(x, [1, 2, 3, 4]), kiln.ShapeError);
  t.throws(() => kiln.layerNorm(x, 4, kiln.ones([3])), /layerNorm: weight shape \[3\] does not match normalizedShape \[4\]/);
  t.throws(() => kiln.layerNorm(x, [3, 4], kiln.ones([3, 4]), kiln.ones([12])), /bias shape \[12\] does not match normalizedShape \[3, 4\]/);
  t.throws(() => kiln.layerNorm(x, 4, kiln.ones([4], { dtype: 'float64' })), kiln.DTypeError);
  t.throws(() => kiln.layerNorm(kiln.zeros([2, 4], { dtype: 'int32' }), 4), /layerNorm: input must be floating point, got int32/);
  t.throws(() => kiln.layerNorm(x, 4, null, null, -1), kiln.ValueError);
  t.throws(() => kiln.layerNorm(x, 4, null, null, NaN), kiln.ValueError);
  const w = kiln.ones([4]);
  w.dispose();
  t.throws(() => kiln.layerNorm(x, 4, w), kiln.DisposedError);
});

t.test('native layer norm kernels check their arguments when called directly', async (t) => {
  const N = native as unknown as Record<string, (...a: unknown[]) => void>;
  const x = kiln.zeros([3, 4]);
  const z = (...s: number[]) => kiln.zeros(s)._h;
  t.throws(() => N.layerNormForward(x._h, z(3), null, 1, 1e-5, z(3, 4), z(3), z(3)), /layerNorm: weight shape \[3\] does not match the normalized shape \[4\]/);
  t.throws(() => N.layerNormForward(x._h, null, null, 3, 1e-5, z(3, 4), z(3), z(3)), kiln.ShapeError);
  t.throws(() => N.layerNormForward(x._h, null, null, 1, 1e-5, z(3, 4), z(2), z(3)), /mean must be a contiguous tensor of 3 elements/);
  t.throws(() => N.layerNormForward(x._h, null, null, 1, 1e-5, kiln.zeros([4, 3]).t()._h, z(3), z(3)), kiln.ValueError);
  t.throws(() => N.layerNormBackward(z(3, 5), x._h, z(3), z(3), null, 1, z(3, 4), null, null), kiln.ShapeError);
  t.throws(() => N.layerNormBackward(z(3, 4), x._h, z(3), z(3), null, 1, null, z(5), null), /weight gradient must be a contiguous tensor of 4 elements/);
});

t.test('layerNorm forward and backward free everything they allocate', async (t) => {
  const x = randomTensor([6, 5], 40).requiresGrad_();
  const w = randomTensor([5], 41).requiresGrad_();
  const step = () => {
    kiln.tidy(() => {
      kiln.layerNorm(x, 5, w, null).backward(kiln.onesLike(x));
      kiln.noGrad(() => kiln.layerNorm(x, 5, w, w));
    });
    for (const p of [x, w]) {
      p.grad!.dispose();
      p.grad = null;
    }
  };
  expectSteadyMemory(t, step);
});

t.test('addLayerNorm equals x.add(delta) then layerNorm, forward and gradients', async (t) => {
  let seed = 300;
  for (const dtype of ['float64', 'float32'] as const) {
    // Rows of a few sizes, a row of a large mean, a non-contiguous x, 1-D input.
    const cases: Array<[string, () => Tensor, number]> = [
      ['[2, 5, 96]', () => randomTensor([2, 5, 96], seed++, -3, 3, dtype), 96],
      ['[3, 7]', () => randomTensor([3, 7], seed++, -3, 3, dtype), 7],
      ['large mean [4, 33]', () => randomTensor([4, 33], seed++, 999, 1001, dtype), 33],
      ['transposed [5, 3]', () => randomTensor([3, 5], seed++, -3, 3, dtype).transpose(0, 1), 3],
      ['1-D [9]', () => randomTensor([9], seed++, -3, 3, dtype), 9],
    ];
    for (const [name, make, M] of cases) {
      for (const affine of ['weight and bias', 'weight', 'none'] as const) {
        const x0 = make(), d0 = randomTensor([...x0.shape], seed++, -1, 1, dtype);
        const w0 = randomTensor([M], seed++, 0.5, 1.5, dtype), b0 = randomTensor([M], seed++, -1, 1, dtype);
        const leaves = () => [x0, d0, w0, b0].map((v) => v.detach().clone().requiresGrad_());
        const [x1, d1, w1, b1] = leaves(), [x2, d2, w2, b2] = leaves();
        const wt = (w: Tensor) => (affine === 'none' ? null : w), bt = (b: Tensor) => (affine === 'weight and bias' ? b : null);
        const [sum, normed] = addLayerNorm(x1, d1, wt(w1), bt(b1), 1e-5);
        const refSum = x2.add(d2), refNormed = kiln.layerNorm(refSum, M, wt(w2), bt(b2), 1e-5);
        const label = `${dtype} ${name} (${affine})`;
        t.same([sum.shape, normed.shape], [refSum.shape, refNormed.shape], `${label}: shapes`);
        t.equal(maxAbsDiff(values(sum), values(refSum)), 0, `${label}: sum`);
        t.equal(maxAbsDiff(values(normed), values(refNormed)), 0, `${label}: normed`);
        // Both outputs feed the loss: the sum's gradient gathers its own and the norm's.
        const gs = randomTensor([...sum.shape], seed++, -1, 1, dtype), gn = randomTensor([...sum.shape], seed++, -1, 1, dtype);
        sum.mul(gs).sum().add(normed.mul(gn).sum()).backward();
        refSum.mul(gs).sum().add(refNormed.mul(gn).sum()).backward();
        for (const [i, a, b] of [[0, x1, x2], [1, d1, d2], [2, w1, w2], [3, b1, b2]] as Array<[number, Tensor, Tensor]>) {
          if (b.grad === null) {
            t.equal(a.grad, null, `${label}: input ${i} gets no gradient`);
            continue;
          }
          t.equal(maxAbsDiff(values(a.grad!), values(b.grad)), 0, `${label}: input ${i} gradient`);
        }
      }
    }
  }
});

t.test('addLayerNorm gradients by finite differences (float64)', async (t) => {
  const f = (x: Tensor, d: Tensor, w: Tensor, b: Tensor) => kiln.stack(addLayerNorm(x, d, w, b, 1e-5));
  for (const shape of [[3, 8], [2, 2, 5], [6]]) {
    const M = shape[shape.length - 1];
    const r = gradcheck(f, [randomTensor(shape, 90), randomTensor(shape, 91), randomTensor([M], 92, 0.5, 1.5), randomTensor([M], 93)]);
    t.ok(r.ok, `${JSON.stringify(shape)}: ${r.detail}`);
  }
  const normedOnly = gradcheck((x, d) => addLayerNorm(x, d)[1], [randomTensor([4, 7], 94), randomTensor([4, 7], 95)]);
  t.ok(normedOnly.ok, `normed alone, no affine: ${normedOnly.detail}`);
});

t.test('addLayerNorm under autocast computes in float32 like layerNorm; operands promote like add', async (t) => {
  const x = randomTensor([4, 16], 70, -2, 2, 'float32').requiresGrad_();
  const d = randomTensor([4, 16], 71, -2, 2, 'float32').requiresGrad_();
  const w = randomTensor([16], 72, 0.5, 1.5, 'float32'), b = randomTensor([16], 73, -1, 1, 'float32');
  const [s, n] = kiln.autocast({ dtype: 'bfloat16' }, () => addLayerNorm(x, d.to('bfloat16'), w, b));
  t.same([s.dtype, n.dtype], ['float32', 'float32'], 'both outputs float32');
  const refS = x.add(d.to('bfloat16')), refN = kiln.layerNorm(refS, 16, w, b);
  t.equal(maxAbsDiff(values(s), values(refS)), 0, 'sum as add promotes it');
  t.equal(maxAbsDiff(values(n), values(refN)), 0, 'normed as layerNorm of that sum');
  s.add(n).sum().backward();
  t.same([x.grad?.dtype, d.grad?.dtype], ['float32', 'float32'], 'gradients reach the float32 leaves');
  // bfloat16 operands without autocast: the CPU computes in float32 and rounds both outputs back.
  const [sb, nb] = addLayerNorm(x.detach().to('bfloat16'), d.detach().to('bfloat16'), w.to('bfloat16'), b.to('bfloat16'));
  t.same([sb.dtype, nb.dtype], ['bfloat16', 'bfloat16'], 'bfloat16 in, bfloat16 out');
  t.ok(maxAbsDiff(values(nb), values(kiln.layerNorm(x.add(d), 16, w, b))) < 5e-2, 'bfloat16 values close to float32');
});

t.test('addLayerNorm checks its arguments, naming the op, shapes and dtypes', async (t) => {
  const x = kiln.zeros([4, 3]);
  t.throws(() => addLayerNorm(x, kiln.zeros([4, 2])), { name: 'ShapeError', message: /addLayerNorm.*delta shape \[4, 2\].*\[4, 3\]/ });
  t.throws(() => addLayerNorm(x, kiln.zeros([3])), { name: 'ShapeError', message: /addLayerNorm.*\[3\].*\[4, 3\]/ });
  t.throws(() => addLayerNorm(x, kiln.zeros([4, 3]), kiln.zeros([4])), { name: 'ShapeError', message: /addLayerNorm.*weight shape \[4\]/ });
  t.throws(() => addLayerNorm(x, kiln.zeros([4, 3]), null, kiln.zeros([3], { dtype: 'float64' })), { name: 'DTypeError', message: /addLayerNorm.*float64.*float32/ });
  t.throws(() => addLayerNorm(kiln.zeros([4, 3], { dtype: 'int64' }), kiln.zeros([4, 3], { dtype: 'int64' })), { name: 'DTypeError', message: /addLayerNorm/ });
  t.throws(() => addLayerNorm(kiln.zeros([]), kiln.zeros([])), { name: 'ShapeError', message: /addLayerNorm.*at least one dim/ });
  t.throws(() => addLayerNorm(x, kiln.zeros([4, 3]), null, null, -1), { name: 'ValueError', message: /addLayerNorm.*eps/ });
  // The native entry point checks again, whatever it is handed.
  const h = (s: number[], dtype: kiln.DType = 'float32') => kiln.zeros(s, { dtype })._h;
  const k = native as unknown as Record<string, (...a: unknown[]) => void>;
  t.throws(() => k.addLayerNormForward(h([4, 3]), h([4, 2]), null, null, 1e-5, h([4, 3]), h([4, 3]), h([4]), h([4])), { name: 'ShapeError', message: /addLayerNorm.*delta/ });
  t.throws(() => k.addLayerNormForward(h([4, 3]), h([4, 3], 'float64'), null, null, 1e-5, h([4, 3]), h([4, 3]), h([4]), h([4])), { name: 'DTypeError', message: /addLayerNorm.*float64/ });
  t.throws(() => k.addLayerNormForward(h([4, 3]), h([4, 3]), null, null, 1e-5, h([4, 2]), h([4, 3]), h([4]), h([4])), { name: 'ShapeError', message: /addLayerNorm.*sum shape/ });
  t.throws(() => k.addLayerNormForward(h([4, 3]), h([4, 3]), null, null, 1e-5, h([4, 3]), h([4, 3]), h([3]), h([4])), { name: 'ValueError', message: /addLayerNorm.*mean/ });
});

t.test('addLayerNorm forward and backward free everything they allocate', async (t) => {
  const x = randomTensor([6, 5], 50).requiresGrad_(), d = randomTensor([6, 5], 51).requiresGrad_();
  const w = randomTensor([5], 52).requiresGrad_();
  const step = () => {
    kiln.tidy(() => {
      const [s, n] = addLayerNorm(x, d, w, null);
      s.add(n).sum().backward();
      kiln.noGrad(() => addLayerNorm(x, d, w, w));
    });
    for (const p of [x, d, w]) {
      p.grad!.dispose();
      p.grad = null;
    }
  };
  expectSteadyMemory(t, step);
});
