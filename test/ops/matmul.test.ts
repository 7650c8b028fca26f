// Matrix products: both GEMM implementations (built-in and OpenBLAS) against a naive reference,
// matmul and linear against a plain TypeScript reference on every argument form and layout, their
// gradients by finite differences, and their errors; linearGelu (the fused bias + GELU epilogue)
// against linear then gelu, forward and gradients.
import t from 'tap';
import * as kiln from '../../lib/index';
import { bindKernels } from '../../lib/ops/dispatch';
import { gemmKernels, gemmRaw, linearGelu } from '../../lib/ops/matmul';
import { native } from '../../lib/native';
import { expectSteadyMemory, gradcheck, maxAbsDiff, randomTensor, values } from '../helpers/gradcheck';

import type { GemmImpl } from '../../lib/ops/matmul';

const hasBlas = kiln.buildInfo().blas === 'openblas';
// Every built-in micro-kernel this CPU runs, OpenBLAS when built with it, and what matmul uses.
const impls: GemmImpl[] = [...gemmKernels(), 'auto'];

/** C = alpha * op(A) op(B) + beta * C on flat row-major arrays (op(X) = X^T when trans). */
function refGemm(ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number, A: number[], B: number[], beta: number, C: number[]): number[] {
  const out = new Array<number>(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += (ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
      out[i * N + j] = alpha * s + (beta === 0 ? 0 : beta * C[i * N + j]);
    }
  }
  return out;
}

/** torch.matmul on flat row-major values: promotion of 1-D arguments and broadcast batch dims. */
function refMatmul(a: number[], as: readonly number[], b: number[], bs: readonly number[]): { v: number[]; shape: number[] } {
  const aP = as.length === 1 ? [1, as[0]] : [...as];
  const bP = bs.length === 1 ? [bs[0], 1] : [...bs];
  const M = aP[aP.length - 2], K = aP[aP.length - 1], N = bP[bP.length - 1];
  const ab = aP.slice(0, -2), bb = bP.slice(0, -2);
  const nb = Math.max(ab.length, bb.length);
  const pad = (s: number[]) => [...new Array(nb - s.length).fill(1), ...s];
  const pa = pad(ab), pb = pad(bb);
  const batch = pa.map((d, i) => (d === 1 ? pb[i] : d));
  const B = batch.reduce((x, y) => x * y, 1);
  const v: number[] = [];
  for (let n = 0; n < B; n++) {
    let r = n, oa = 0, ob = 0, sa = 1, sb = 1;
    for (let d = nb - 1; d >= 0; d--) {
      const i = r % batch[d];
      r = Math.floor(r / batch[d]);
      oa += (pa[d] === 1 ? 0 : i) * sa;
      ob += (pb[d] === 1 ? 0 : i) * sb;
      sa *= pa[d];
      sb *= pb[d];
    }
    for (let i = 0; i < M; i++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[oa * M * K + i * K + k] * b[ob * K * N + k * N + j];
        v.push(s);
      }
    }
  }
  const shape = [...batch, ...(as.length > 1 ? [M] : []), ...(bs.length > 1 ? [N] : [])];
  return { v, shape };
}

function rand(shape: number[], seed: number, dtype: kiln.DType = 'float32'): kiln.Tensor {
  return randomTensor(shape, seed, -1, 1, dtype);
}

function checkMatmul(t: tap.Test, name: string, a: kiln.Tensor, b: kiln.Tensor, tol: number): void {
  const out = kiln.matmul(a, b);
  const ref = refMatmul(values(a), a.shape, values(b), b.shape);
  t.same(out.shape, ref.shape, `${name}: shape`);
  const err = maxAbsDiff(values(out), ref.v);
  t.ok(err <= tol, `${name}: max error ${err}`);
}

t.test('gemm: every implementation against a naive reference', async (t) => {
  const sizes: Array<[number, number, number]> = [
    [1, 1, 1], [1, 17, 5], [7, 1, 9], [5, 7, 1], [6, 16, 8], [13, 33, 21], [37, 29, 300], [150, 70, 40], [2, 3100, 3],
    [97, 130, 260],
  ];
  for (const impl of impls) {
    for (const dtype of ['float32', 'float64'] as const) {
      let seed = 1;
      for (const [M, N, K] of sizes) {
        for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
          const alpha = [1, 0.5, -1.5][seed % 3], beta = [0, 1, 2][seed % 3];
          const A = rand(ta ? [K, M] : [M, K], seed++, dtype), B = rand(tb ? [N, K] : [K, N], seed++, dtype);
          const C = rand([M, N], seed++, dtype);
          const c0 = values(C);
          gemmRaw(impl, A, B, C, ta, tb, alpha, beta);
          const want = refGemm(ta, tb, M, N, K, alpha, values(A), values(B), beta, c0);
          const err = maxAbsDiff(values(C), want);
          const tol = dtype === 'float32' ? 1e-5 * (K + 10) : 1e-12 * (K + 10);
          if (!(err <= tol)) t.fail(`${impl} ${dtype} M=${M} N=${N} K=${K} ta=${ta} tb=${tb}: max error ${err}`);
        }
      }
      t.pass(`${impl} ${dtype}: ${sizes.length * 4} products`);
    }
    // Row strides wider than the rows (slices of wider matrices), K = 0, alpha = 0, and beta = 0 over NaN.
    const A = rand([9, 30], 91).slice(1, 3, 25), B = rand([22, 40], 92).slice(1, 0, 19), C = rand([9, 50], 93).slice(1, 5, 24);
    const c0 = values(C);
    gemmRaw(impl, A, B, C, false, false, 2, -1);
    t.ok(maxAbsDiff(values(C), refGemm(false, false, 9, 19, 22, 2, values(A), values(B), -1, c0)) < 1e-4, `${impl}: strided rows`);
    const nan = kiln.full([4, 5], NaN);
    gemmRaw(impl, rand([4, 3], 94), rand([3, 5], 95), nan, false, false, 1, 0);
    t.ok(values(nan).every(Number.isFinite), `${impl}: beta = 0 ignores NaN in C`);
    const c = kiln.full([3, 2], 4);
    gemmRaw(impl, kiln.zeros([3, 0]), kiln.zeros([0, 2]), c, false, false, 1, 0.5);
    t.same(values(c), [2, 2, 2, 2, 2, 2], `${impl}: K = 0 scales C by beta`);
    gemmRaw(impl, rand([3, 4], 96), rand([4, 2], 97), c, false, false, 0, 1);
    t.same(values(c), [2, 2, 2, 2, 2, 2], `${impl}: alpha = 0 scales C by beta`);
    t.throws(() => gemmRaw(impl, rand([3, 4], 1), rand([5, 2], 2), c, false, false, 1, 0), kiln.ShapeError);
  }
  t.ok(impls.includes('builtin') && impls.includes('builtin:baseline'), `implementations: ${impls.join(', ')}`);
  t.equal(impls.includes('blas'), hasBlas);
  for (const k of ['builtin:avx2', 'builtin:avx512'] as const) {
    if (!impls.includes(k)) t.throws(() => gemmRaw(k, rand([1, 1], 1), rand([1, 1], 2), rand([1, 1], 3), false, false, 1, 0), kiln.ValueError, `${k} unsupported here`);
  }
  if (!hasBlas) t.throws(() => gemmRaw('blas', rand([1, 1], 1), rand([1, 1], 2), rand([1, 1], 3), false, false, 1, 0), kiln.ValueError);
  t.throws(() => gemmRaw('fast' as GemmImpl, rand([1, 1], 1), rand([1, 1], 2), rand([1, 1], 3), false, false, 1, 0), kiln.ValueError);
  t.throws(() => gemmRaw('builtin', rand([2, 2], 1).t(), rand([2, 2], 2), rand([2, 2], 3), false, false, 1, 0), kiln.ValueError);
  // The threaded and the single-thread paths of the built-in kernel agree with the reference.
  for (const threads of [1, 2]) {
    kiln.setNumThreads(threads);
    const A = rand([130, 70], 41), B = rand([70, 90], 42), C = kiln.zeros([130, 90]);
    gemmRaw('builtin', A, B, C, false, false, 1, 0);
    t.ok(maxAbsDiff(values(C), refGemm(false, false, 130, 90, 70, 1, values(A), values(B), 0, [])) < 1e-4, `builtin with ${threads} thread(s)`);
  }
  kiln.setNumThreads(require('os').cpus().length);
});

t.test('matmul: every argument form against the reference', async (t) => {
  const cases: Array<[string, number[], number[]]> = [
    ['dot', [7], [7]],
    ['matrix @ vector', [5, 7], [7]],
    ['vector @ matrix', [7], [7, 4]],
    ['matrix @ matrix', [5, 7], [7, 4]],
    ['odd sizes', [37, 130], [130, 19]],
    ['batched', [3, 5, 7], [3, 7, 4]],
    ['batched @ matrix', [2, 3, 5, 7], [7, 4]],
    ['matrix @ batched', [5, 7], [2, 3, 7, 4]],
    ['vector @ batched', [7], [3, 7, 4]],
    ['batched @ vector', [3, 5, 7], [7]],
    ['broadcast batch', [2, 1, 5, 7], [3, 7, 4]],
    ['broadcast both ways', [2, 1, 5, 7], [1, 3, 7, 4]],
    ['size-1 dims', [1, 7], [7, 1]],
    ['many small (one per thread)', [40, 9, 11], [40, 11, 6]],
    ['empty batch', [0, 5, 7], [7, 4]],
    ['K = 0', [3, 0], [0, 4]],
    ['M = 0', [0, 7], [7, 4]],
  ];
  let seed = 100;
  for (const [name, as, bs] of cases) {
    for (const dtype of ['float32', 'float64'] as const) {
      checkMatmul(t, `${name} ${dtype}`, rand(as, seed++, dtype), rand(bs, seed++, dtype), dtype === 'float32' ? 1e-4 : 1e-12);
    }
  }
  const dot = kiln.matmul(kiln.tensor([1, 2, 3], { dtype: 'float32' }), kiln.tensor([4, 5, 6], { dtype: 'float32' }));
  t.same(dot.shape, [], 'dot gives a 0-D tensor');
  t.equal(dot.item(), 32);
  t.same(kiln.matmul(kiln.zeros([3, 0]), kiln.zeros([0, 4])).toArray(), [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]);
  t.same(rand([2, 3], 1).matmul(rand([3, 4], 2)).shape, [2, 4], 'Tensor.matmul');
});

t.test('matmul: strided operands (transposed, sliced, expanded, permuted)', async (t) => {
  const x = rand([7, 5], 1), y = rand([4, 7], 2), w = rand([6, 9, 11], 3);
  const cases: Array<[string, kiln.Tensor, kiln.Tensor]> = [
    ['transposed a', x.t(), rand([7, 4], 4)],
    ['transposed b', rand([5, 7], 5), y.t()],
    ['both transposed', x.t(), y.t()],
    ['sliced rows and columns', w.select(0, 1).slice(0, 1, 8).slice(1, 2, 9), rand([7, 3], 6).slice(1, 0, 3, 2)],
    ['column slice with step (copied)', rand([5, 14], 7).slice(1, 0, 14, 2), rand([7, 3], 8)],
    ['expanded row', rand([1, 7], 9).expand(5, 7), rand([7, 3], 10)],
    ['expanded batch', rand([1, 5, 7], 11).expand(4, 5, 7), rand([4, 7, 3], 12)],
    ['batched transposed b', rand([3, 5, 7], 13), rand([3, 4, 7], 14).mT],
    ['batched transposed a @ matrix', rand([3, 7, 5], 15).mT, rand([7, 4], 16)],
    ['permuted batch', rand([5, 3, 7], 17).permute(1, 0, 2), rand([3, 7, 2], 18)],
    ['mixed broadcast with transposes', rand([2, 1, 7, 5], 19).mT, rand([1, 3, 4, 7], 20).mT],
    ['vector with stride', rand([14], 21).slice(0, 0, 14, 2), rand([4, 7], 22).t()],
    ['batched @ sliced matrix', rand([2, 3, 7], 23), rand([9, 6], 24).slice(0, 1, 8).slice(1, 1, 5)],
  ];
  for (const [name, a, b] of cases) checkMatmul(t, name, a, b, 1e-5);
});

t.test('matmul: larger products through the threaded path', async (t) => {
  checkMatmul(t, 'float32 200x300 @ 300x150', rand([200, 300], 31), rand([300, 150], 32), 5e-4);
  checkMatmul(t, 'float64 batched 2x150x260 @ 260x140 transposed', rand([2, 150, 260], 33, 'float64'), rand([140, 260], 34, 'float64').t(), 1e-11);
});

t.test('matmul: bfloat16 and float16 compute in float32', async (t) => {
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const a = rand([4, 6], 41).to(dtype), b = rand([6, 3], 42).to(dtype);
    const out = kiln.matmul(a, b);
    t.equal(out.dtype, dtype);
    const ref = kiln.matmul(a.float(), b.float());
    t.ok(maxAbsDiff(values(out), values(ref)) < 2e-2, `${dtype} result close to float32`);
    // The CPU's bmm takes float32/float64 only (kernels() says so): the product is the float32 one, rounded.
    t.same(values(out), values(ref.to(dtype)), `${dtype} result is the float32 product rounded to ${dtype}`);
    const lin = kiln.linear(a, b.t(), rand([3], 43).to(dtype));
    t.equal(lin.dtype, dtype, `linear in ${dtype}`);
  }
});

t.test('matmul and linear under autocast compute in bfloat16 from float32 inputs', async (t) => {
  const a = rand([4, 6], 51).requiresGrad_(), b = rand([6, 3], 52).requiresGrad_();
  const out = kiln.autocast({ dtype: 'bfloat16' }, () => kiln.matmul(a, b));
  t.equal(out.dtype, 'bfloat16', 'result is bfloat16');
  const ref = kiln.matmul(a.to('bfloat16'), b.to('bfloat16'));
  t.same(values(out), values(ref), 'the product of the inputs rounded to bfloat16');
  out.float().sum().backward();
  t.equal(a.grad?.dtype, 'float32', "a's gradient reaches the float32 leaf as float32");
  t.equal(b.grad?.dtype, 'float32', "b's gradient reaches the float32 leaf as float32");
  // d(sum(a @ b))/da = ones @ b^T, each row the row sums of b (in bfloat16 precision).
  const rowSums = values(b).reduce((acc, v, i) => ((acc[Math.floor(i / 3)] += v), acc), new Array<number>(6).fill(0));
  t.ok(maxAbsDiff(values(a.grad!), new Array<number>(4).fill(0).flatMap(() => rowSums)) < 5e-2, "a's gradient values");

  const w = rand([3, 6], 53).requiresGrad_(), bias = rand([3], 54).requiresGrad_();
  const y = kiln.autocast({ dtype: 'bfloat16' }, () => kiln.linear(a, w, bias));
  t.equal(y.dtype, 'bfloat16', 'linear under autocast is bfloat16');
  y.float().sum().backward();
  t.same([w.grad?.dtype, bias.grad?.dtype], ['float32', 'float32'], 'weight and bias gradients are float32');
  t.equal(kiln.autocast({ dtype: 'bfloat16', deviceType: 'cuda' }, () => kiln.matmul(a, b)).dtype, 'float32', 'a CUDA-only scope leaves the CPU alone');
  t.equal(kiln.autocast({ dtype: 'float16' }, () => kiln.matmul(a, b)).dtype, 'float16', 'float16 autocast');
});

t.test('linear: x @ weight^T + bias', async (t) => {
  const ref = (x: kiln.Tensor, w: kiln.Tensor, b: kiln.Tensor | null) => {
    const r = refMatmul(values(x), x.shape, values(w.t().contiguous()), [w.shape[1], w.shape[0]]);
    const bv = b ? values(b) : null;
    return { shape: r.shape, v: r.v.map((v, i) => v + (bv ? bv[i % bv.length] : 0)) };
  };
  let seed = 200;
  const cases: Array<[string, kiln.Tensor, kiln.Tensor, kiln.Tensor | null]> = [
    ['2-D with bias', rand([5, 7], seed++), rand([3, 7], seed++), rand([3], seed++)],
    ['3-D with bias', rand([2, 4, 7], seed++), rand([3, 7], seed++), rand([3], seed++)],
    ['1-D input', rand([7], seed++), rand([3, 7], seed++), rand([3], seed++)],
    ['no bias', rand([2, 4, 7], seed++), rand([3, 7], seed++), null],
    ['transposed leading dims (no fold)', rand([4, 2, 7], seed++).transpose(0, 1), rand([3, 7], seed++), rand([3], seed++)],
    ['transposed weight and strided bias', rand([5, 7], seed++), rand([7, 3], seed++).t(), rand([6], seed++).slice(0, 0, 6, 2)],
    ['empty batch', rand([0, 7], seed++), rand([3, 7], seed++), rand([3], seed++)],
    ['no input features (bias only)', rand([2, 0], seed++), rand([3, 0], seed++), rand([3], seed++)],
    ['large', rand([64, 300], seed++), rand([90, 300], seed++), rand([90], seed++)],
  ];
  for (const [name, x, w, b] of cases) {
    const out = kiln.linear(x, w, b);
    const r = ref(x, w, b);
    t.same(out.shape, r.shape, `${name}: shape`);
    const err = maxAbsDiff(values(out), r.v);
    t.ok(err < 1e-4, `${name}: max error ${err}`);
  }
  const d = kiln.linear(rand([3, 4], 1, 'bfloat16'), rand([2, 4], 2, 'bfloat16'), rand([2], 3, 'bfloat16'));
  t.equal(d.dtype, 'bfloat16');
});

t.test('temporary handles are freed', async (t) => {
  const a = rand([2, 1, 7, 5], 1).mT, b = rand([1, 3, 4, 7], 2).mT;
  const before = native.memoryStats();
  kiln.tidy(() => {
    kiln.matmul(a, b);
    kiln.linear(rand([4, 2, 7], 3).transpose(0, 1), rand([3, 7], 4), rand([3], 5));
  });
  const after = native.memoryStats();
  t.equal(after.tensors, before.tensors, 'no handles left');
  t.equal(after.bytes, before.bytes, 'no bytes left');
});

t.test('errors name the op, the shapes and the dtypes', async (t) => {
  const f = kiln.zeros([2, 3]);
  t.throws(() => kiln.matmul(f, kiln.zeros([4, 5])), { name: 'ShapeError', message: /matmul.*\[2, 3\].*\[4, 5\]/ });
  t.throws(() => kiln.matmul(kiln.zeros([2, 2, 3]), kiln.zeros([3, 3, 4])), { name: 'ShapeError', message: /matmul.*\[2, 2, 3\].*\[3, 3, 4\]/ });
  t.throws(() => kiln.matmul(kiln.zeros([3]), kiln.zeros([4])), { name: 'ShapeError', message: /\[3\].*\[4\]/ });
  t.throws(() => kiln.matmul(kiln.scalar(1), f), { name: 'ShapeError', message: /matmul/ });
  t.throws(() => kiln.matmul(kiln.zeros([2, 3], { dtype: 'int32' }), kiln.zeros([3, 2], { dtype: 'int32' })), { name: 'DTypeError', message: /matmul.*int32/ });
  t.throws(() => kiln.matmul(f, kiln.zeros([3, 2], { dtype: 'float64' })), { name: 'DTypeError', message: /matmul.*float32.*float64/ });
  t.throws(() => kiln.matmul(f, kiln.zeros([3, 2], { dtype: 'bool' })), kiln.DTypeError);
  t.throws(() => kiln.linear(kiln.zeros([2, 5]), f), { name: 'ShapeError', message: /linear.*\[2, 5\].*\[2, 3\]/ });
  t.throws(() => kiln.linear(kiln.zeros([4, 3]), f, kiln.zeros([3])), { name: 'ShapeError', message: /linear.*bias.*\[3\]/ });
  t.throws(() => kiln.linear(kiln.zeros([4, 3]), kiln.zeros([3])), { name: 'ShapeError', message: /linear.*2-D/ });
  t.throws(() => kiln.linear(kiln.zeros([4, 3], { dtype: 'int64' }), kiln.zeros([2, 3], { dtype: 'int64' })), kiln.DTypeError);
  t.throws(() => kiln.linear(kiln.zeros([4, 3]), f, kiln.zeros([2], { dtype: 'float64' })), kiln.DTypeError);
  const d = kiln.zeros([2, 3]);
  d.dispose();
  t.throws(() => kiln.matmul(d, kiln.zeros([3, 2])), kiln.DisposedError);
  // The native entry point checks again, whatever it is handed.
  const mm = bindKernels('matmul', { bmm: '(a:T, b:T, bias:T?, epilogue:e, out:T, pre:T?) -> void' });
  const h = (s: number[], dtype: kiln.DType = 'float32') => kiln.zeros(s, { dtype })._h;
  t.throws(() => mm.bmm(h([1, 2, 3]), h([1, 4, 5]), null, 0, h([1, 2, 5]), null), kiln.ShapeError);
  t.throws(() => mm.bmm(h([2, 3]), h([3, 5]), null, 0, h([2, 5]), null), kiln.ShapeError);
  t.throws(() => mm.bmm(h([1, 2, 3]), h([1, 3, 5]), null, 0, h([1, 2, 4]), null), kiln.ShapeError);
  t.throws(() => mm.bmm(h([1, 2, 3]), h([1, 3, 5]), h([4]), 0, h([1, 2, 5]), null), kiln.ShapeError);
  t.throws(() => mm.bmm(h([1, 2, 3], 'int32'), h([1, 3, 5], 'int32'), null, 0, h([1, 2, 5], 'int32'), null), kiln.DTypeError);
  t.throws(() => mm.bmm(h([1, 2, 3]), h([1, 3, 5], 'float64'), null, 0, h([1, 2, 5]), null), kiln.DTypeError);
  t.throws(() => mm.bmm(h([1, 2, 3]), h([1, 3, 5]), null, 0, kiln.zeros([1, 5, 2]).mT._h, null), kiln.ValueError);
  // The activation's input: only with an activation, contiguous, of out's shape and dtype.
  t.throws(() => mm.bmm(h([1, 2, 3]), h([1, 3, 5]), null, 0, h([1, 2, 5]), h([1, 2, 5])), { name: 'ValueError', message: /matmul.*only with an activation/ });
  t.throws(() => mm.bmm(h([1, 2, 3]), h([1, 3, 5]), null, 1, h([1, 2, 5]), h([1, 5, 2])), { name: 'ShapeError', message: /matmul.*\[1, 2, 5\]/ });
  t.throws(() => mm.bmm(h([1, 2, 3]), h([1, 3, 5]), null, 1, h([1, 2, 5]), h([1, 2, 5], 'float64')), { name: 'DTypeError', message: /matmul.*float64/ });
  t.throws(() => mm.bmm(h([1, 2, 3]), h([1, 3, 5]), null, 2, h([1, 2, 5]), null), { name: 'ValueError', message: /unknown code 2/ });
});

t.test('bfloat16 products backpropagate in bfloat16', async (t) => {
  const a = rand([3, 4], 1, 'bfloat16').requiresGrad_(), w = rand([2, 4], 2, 'bfloat16').requiresGrad_();
  kiln.linear(kiln.matmul(a, rand([4, 4], 3, 'bfloat16')), w).float().sum().backward();
  t.equal(a.grad?.dtype, 'bfloat16');
  t.same(w.grad?.shape, [2, 4]);
});

t.test('gradients (finite differences, float64)', async (t) => {
  let seed = 300;
  const r = (s: number[]) => randomTensor(s, seed++);
  const cases: Array<[string, (...xs: kiln.Tensor[]) => kiln.Tensor, kiln.Tensor[]]> = [
    ['dot', (a, b) => kiln.matmul(a, b), [r([5]), r([5])]],
    ['matrix @ vector', (a, b) => kiln.matmul(a, b), [r([3, 5]), r([5])]],
    ['vector @ matrix', (a, b) => kiln.matmul(a, b), [r([5]), r([5, 4])]],
    ['matrix @ matrix', (a, b) => kiln.matmul(a, b), [r([3, 5]), r([5, 4])]],
    ['batched', (a, b) => kiln.matmul(a, b), [r([2, 3, 5]), r([2, 5, 4])]],
    ['batched @ matrix (folded)', (a, b) => kiln.matmul(a, b), [r([2, 3, 3, 5]), r([5, 4])]],
    ['matrix @ batched (folded)', (a, b) => kiln.matmul(a, b), [r([3, 5]), r([2, 5, 4])]],
    ['broadcast both ways', (a, b) => kiln.matmul(a, b), [r([2, 1, 3, 4]), r([3, 4, 2])]],
    ['vector @ batched', (a, b) => kiln.matmul(a, b), [r([4]), r([2, 4, 3])]],
    ['transposed operands', (a, b) => kiln.matmul(a.t(), b.t()), [r([5, 3]), r([4, 5])]],
    ['only b needs grad', (a, b) => kiln.matmul(a, b), [r([3, 5]), r([5, 2])]],
    ['only a needs grad', (a, b) => kiln.matmul(a, b), [r([2, 3, 5]), r([5, 2])]],
    ['linear', (x, w, b) => kiln.linear(x, w, b), [r([2, 3, 5]), r([4, 5]), r([4])]],
    ['linear 1-D input', (x, w, b) => kiln.linear(x, w, b), [r([5]), r([4, 5]), r([4])]],
    ['linear no bias, strided input', (x, w) => kiln.linear(x.transpose(0, 1), w), [r([3, 2, 5]), r([4, 5])]],
  ];
  for (const [name, f, inputs] of cases) {
    const skip = name === 'only b needs grad' ? [0] : name === 'only a needs grad' ? [1] : [];
    const res = gradcheck(f, inputs, { skip });
    t.ok(res.ok, `${name}: ${res.detail}`);
  }
});

t.test('linearGelu equals linear then gelu(tanh), forward and gradients', async (t) => {
  let seed = 700;
  const composed = (x: kiln.Tensor, w: kiln.Tensor, b: kiln.Tensor | null) => kiln.linear(x, w, b).gelu('tanh');
  // Inputs: rows that merge into one product, a transposed x (a batched product), one row, a 1-D x.
  const cases: Array<[string, (dtype: kiln.DType) => kiln.Tensor]> = [
    ['[2, 5, 6]', (dtype) => randomTensor([2, 5, 6], seed++, -2, 2, dtype)],
    ['transposed [5, 2, 6]', (dtype) => randomTensor([2, 5, 6], seed++, -2, 2, dtype).transpose(0, 1)],
    ['[1, 6]', (dtype) => randomTensor([1, 6], seed++, -2, 2, dtype)],
    ['1-D [6]', (dtype) => randomTensor([6], seed++, -2, 2, dtype)],
  ];
  for (const dtype of ['float64', 'float32'] as const) {
    for (const [name, make] of cases) {
      for (const withBias of [true, false]) {
        const x0 = make(dtype);
        const w0 = randomTensor([7, 6], seed++, -1, 1, dtype), b0 = randomTensor([7], seed++, -1, 1, dtype);
        const leaves = () => [x0, w0, b0].map((v) => v.detach().clone().requiresGrad_());
        const [x1, w1, b1] = leaves(), [x2, w2, b2] = leaves();
        const fused = linearGelu(x1, w1, withBias ? b1 : null), ref = composed(x2, w2, withBias ? b2 : null);
        const label = `${dtype} ${name}${withBias ? '' : ' without bias'}`;
        t.same(fused.shape, ref.shape, `${label}: shape`);
        t.equal(fused.dtype, dtype, `${label}: dtype`);
        // The CPU computes both with the same product and the same gelu_tanh: equal bit for bit.
        t.equal(maxAbsDiff(values(fused), values(ref)), 0, `${label}: forward`);
        const g = randomTensor([...ref.shape], seed++, -1, 1, dtype);
        fused.backward(g);
        ref.backward(g);
        t.equal(maxAbsDiff(values(x1.grad!), values(x2.grad!)), 0, `${label}: input gradient`);
        t.equal(maxAbsDiff(values(w1.grad!), values(w2.grad!)), 0, `${label}: weight gradient`);
        if (withBias) t.equal(maxAbsDiff(values(b1.grad!), values(b2.grad!)), 0, `${label}: bias gradient`);
        else t.equal(b1.grad, null, `${label}: no bias, no gradient`);
        // Without a graph to record, the GELU's input is not kept: the same values.
        t.equal(maxAbsDiff(values(kiln.noGrad(() => linearGelu(x0, w0, withBias ? b0 : null))), values(ref)), 0, `${label}: no grad`);
      }
    }
  }
});

t.test('linearGelu gradients by finite differences (float64)', async (t) => {
  for (const [xs, outF] of [[[3, 4], 5], [[2, 3, 4], 6], [[4], 3]] as Array<[number[], number]>) {
    const inF = xs[xs.length - 1];
    const r = gradcheck((x, w, b) => linearGelu(x, w, b), [randomTensor(xs, 80), randomTensor([outF, inF], 81), randomTensor([outF], 82)]);
    t.ok(r.ok, `x ${JSON.stringify(xs)} -> ${outF}: ${r.detail}`);
    const nb = gradcheck((x, w) => linearGelu(x, w), [randomTensor(xs, 83), randomTensor([outF, inF], 84)]);
    t.ok(nb.ok, `without bias: ${nb.detail}`);
  }
});

t.test('linearGelu under autocast computes in bfloat16 like linear', async (t) => {
  const a = rand([4, 6], 91).requiresGrad_(), w = rand([5, 6], 92).requiresGrad_(), bias = rand([5], 93).requiresGrad_();
  const y = kiln.autocast({ dtype: 'bfloat16' }, () => linearGelu(a, w, bias));
  const lin = kiln.autocast({ dtype: 'bfloat16' }, () => kiln.linear(a, w, bias));
  t.equal(y.dtype, lin.dtype, 'the dtype linear gets under autocast (bfloat16)');
  t.equal(y.dtype, 'bfloat16');
  // The GELU of the float32 product rounded once, against gelu of the product rounded to bfloat16.
  const ref = lin.float().gelu('tanh');
  t.ok(maxAbsDiff(values(y.float()), values(ref)) < 2e-2, 'close to linear then gelu in bfloat16');
  y.float().sum().backward();
  t.same([a.grad?.dtype, w.grad?.dtype, bias.grad?.dtype], ['float32', 'float32', 'float32'], 'gradients reach the float32 leaves as float32');
  t.equal(kiln.autocast({ dtype: 'bfloat16' }, () => linearGelu(a.double(), w.double(), bias.double())).dtype, 'float64', 'float64 stays float64');
});

t.test('linearGelu checks its arguments, naming the op, shapes and dtypes', async (t) => {
  const x = kiln.zeros([4, 3]), w = kiln.zeros([2, 3]);
  t.throws(() => linearGelu(x, kiln.zeros([2, 4])), { name: 'ShapeError', message: /linearGelu.*\[4, 3\].*\[2, 4\]/ });
  t.throws(() => linearGelu(x, kiln.zeros([3])), { name: 'ShapeError', message: /linearGelu.*2-D/ });
  t.throws(() => linearGelu(x, w, kiln.zeros([3])), { name: 'ShapeError', message: /linearGelu.*bias of shape \[3\]/ });
  t.throws(() => linearGelu(x, w, kiln.zeros([2], { dtype: 'float64' })), { name: 'DTypeError', message: /linearGelu.*float32.*float64/ });
  t.throws(() => linearGelu(kiln.zeros([4, 3], { dtype: 'int64' }), kiln.zeros([2, 3], { dtype: 'int64' })), { name: 'DTypeError', message: /linearGelu.*int64/ });
});

t.test('linearGelu forward and backward free everything they allocate', async (t) => {
  const x = randomTensor([6, 5], 60).requiresGrad_(), w = randomTensor([4, 5], 61).requiresGrad_(), b = randomTensor([4], 62).requiresGrad_();
  const step = () => {
    kiln.tidy(() => {
      linearGelu(x, w, b).backward(kiln.ones([6, 4], { dtype: 'float64' }));
      kiln.noGrad(() => linearGelu(x, w, b));
    });
    for (const p of [x, w, b]) {
      p.grad!.dispose();
      p.grad = null;
    }
  };
  expectSteadyMemory(t, step);
});
