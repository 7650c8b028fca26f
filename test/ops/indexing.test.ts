// Indexing ops: embedding, indexSelect, gather, scatterAdd against plain TypeScript references
// (contiguous and strided inputs, repeated indices, int32 and int64 indices), gradients by finite
// differences, bounds checks before any memory is touched, and thread-count independence.
import t from 'tap';
import * as kiln from '../../lib/index';
import { bindKernels } from '../../lib/ops/dispatch';
import { gradcheck, randomTensor, rng, values } from '../helpers/gradcheck';

type Coords = number[];
// The native entry points, called directly to check what they do whatever the caller passes.
const native = bindKernels('index', {
  gather: '(x:T, dim:i, index:T, out:T) -> void',
  indexSelect: '(x:T, dim:i, index:T, out:T) -> void',
  embeddingBackward: '(gradWeight:T, indices:T, grad:T) -> void',
  scatterAdd: '(out:T, dim:i, index:T, src:T) -> void',
});

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Calls fn for every coordinate of shape in row-major order. */
function forEachIndex(shape: readonly number[], fn: (c: Coords, linear: number) => void): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const c = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    fn(c, i);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++c[d] < shape[d]) break;
      c[d] = 0;
    }
  }
}

/** The value at coordinates c of a row-major array with the given strides. */
function at(vals: number[], st: readonly number[], c: Coords): number {
  let o = 0;
  for (let d = 0; d < c.length; d++) o += c[d] * st[d];
  return vals[o];
}

function randomIndex(shape: number[], size: number, seed: number, dtype: 'int32' | 'int64' = 'int64'): kiln.Tensor {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return kiln.tensor(Array.from({ length: n }, () => Math.floor(r() * size)), { shape, dtype });
}

// ---- references ----

function refGather(x: kiln.Tensor, dim: number, index: kiln.Tensor): number[] {
  const xv = values(x), iv = values(index), out: number[] = [];
  const xs = strides(x.shape);
  forEachIndex(index.shape, (c, i) => {
    const src = [...c];
    src[dim] = iv[i];
    out.push(at(xv, xs, src));
  });
  return out;
}

function refIndexSelect(x: kiln.Tensor, dim: number, index: kiln.Tensor): number[] {
  const xv = values(x), iv = values(index), out: number[] = [];
  const xs = strides(x.shape);
  const shape = [...x.shape];
  shape[dim] = iv.length;
  forEachIndex(shape, (c) => {
    const src = [...c];
    src[dim] = iv[c[dim]];
    out.push(at(xv, xs, src));
  });
  return out;
}

function refScatterAdd(x: kiln.Tensor, dim: number, index: kiln.Tensor, src: kiln.Tensor): number[] {
  const out = values(x), iv = values(index), sv = values(src);
  const xs = strides(x.shape), ss = strides(src.shape);
  forEachIndex(index.shape, (c, i) => {
    const dst = [...c];
    dst[dim] = iv[i];
    out[dst.reduce((a, ci, d) => a + ci * xs[d], 0)] += at(sv, ss, c);
  });
  return out;
}

function refEmbeddingGrad(indices: number[], grad: number[], rows: number, dim: number): number[] {
  const out = new Array<number>(rows * dim).fill(0);
  indices.forEach((r, j) => {
    for (let k = 0; k < dim; k++) out[r * dim + k] += grad[j * dim + k];
  });
  return out;
}

function close(a: number[], b: number[], tol = 1e-6): boolean {
  return a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= tol * (1 + Math.abs(b[i])));
}

// ---- embedding ----

t.test('embedding picks rows for indices of any shape and layout', async (t) => {
  const w = randomTensor([7, 5], 1, -1, 1, 'float32');
  for (const dtype of ['int32', 'int64'] as const) {
    for (const shape of [[9], [3, 4], [2, 3, 2]]) {
      const idx = randomIndex(shape, 7, shape.length + 10, dtype);
      const out = kiln.embedding(idx, w);
      t.same(out.shape, [...shape, 5], `shape for indices ${JSON.stringify(shape)} ${dtype}`);
      t.same(values(out), refIndexSelect(w, 0, idx.flatten()), `values for ${JSON.stringify(shape)} ${dtype}`);
    }
  }
  const scalarIdx = kiln.tensor(4);
  t.same(kiln.embedding(scalarIdx, w).shape, [5]);
  t.same(values(kiln.embedding(scalarIdx, w)), values(w.select(0, 4)));

  // transposed weight, transposed / sliced / expanded indices
  const wt = randomTensor([5, 7], 2, -1, 1, 'float64').t();
  const base = randomIndex([4, 6], 7, 3);
  for (const [name, idx] of [
    ['transposed', base.t()],
    ['sliced', base.slice(1, 1, 6, 2)],
    ['expanded', base.select(0, 1).unsqueeze(0).expand(3, 6)],
  ] as const) {
    const out = kiln.embedding(idx, wt);
    t.same(values(out), refIndexSelect(wt, 0, idx.contiguous().flatten()), `${name} indices, transposed weight`);
  }
  const empty = kiln.embedding(kiln.tensor([], { dtype: 'int64' }), w);
  t.same(empty.shape, [0, 5]);
});

t.test('embedding gradient accumulates repeated indices', async (t) => {
  const idx = kiln.tensor([[0, 2, 2], [4, 0, 2]]);
  const w = randomTensor([5, 3], 4);
  const r = gradcheck((a) => kiln.embedding(idx, a), [w]);
  t.ok(r.ok, r.detail);
  const wg = kiln.tensor(values(w), { shape: [5, 3], dtype: 'float64', requiresGrad: true });
  const g = randomTensor([2, 3, 3], 5);
  kiln.embedding(idx, wg).backward(g);
  t.ok(close(values(wg.grad!), refEmbeddingGrad(values(idx), values(g), 5, 3), 1e-12), 'grad = sum of rows per index');
  t.same(values(wg.grad!).slice(3, 6), [0, 0, 0], 'unused row gets zero gradient');
  // A strided (transposed) upstream gradient and int32 indices.
  const w2 = kiln.tensor(values(w), { shape: [5, 3], dtype: 'float64', requiresGrad: true });
  const gT = randomTensor([3, 6], 6).t();
  kiln.embedding(kiln.tensor([1, 1, 1, 3, 0, 1], { dtype: 'int32' }), w2).backward(gT);
  t.ok(close(values(w2.grad!), refEmbeddingGrad([1, 1, 1, 3, 0, 1], values(gT.contiguous()), 5, 3), 1e-12));
});

t.test('embedding backward is parallel, deterministic and correct on large inputs', async (t) => {
  // Narrow rows (work split by index value) and wide rows (split along the embedding dim).
  for (const [rows, dim, n] of [[50, 3, 20000], [11, 1000, 300]]) {
    const idx = randomIndex([n], rows, rows + dim);
    const g = randomTensor([n, dim], 7, -1, 1, 'float32');
    const grads = [1, 2].map((threads) => {
      kiln.setNumThreads(threads);
      const gw = kiln.zeros([rows, dim]);
      native.embeddingBackward(gw._h, idx._h, g._h);
      return values(gw);
    });
    kiln.setNumThreads(2);
    t.same(grads[0], grads[1], `[${rows}, ${dim}] x ${n}: bitwise equal with 1 and 2 threads`);
    t.ok(close(grads[1], refEmbeddingGrad(values(idx), values(g), rows, dim), 1e-4), `[${rows}, ${dim}] x ${n}: values`);
  }
});

// ---- indexSelect ----

t.test('indexSelect along every dim, strided inputs, repeated indices', async (t) => {
  const x = randomTensor([4, 5, 6], 8);
  for (let dim = 0; dim < 3; dim++) {
    const idx = kiln.tensor([x.shape[dim] - 1, 0, 1, 0], { dtype: dim === 1 ? 'int32' : 'int64' });
    t.same(values(kiln.indexSelect(x, dim, idx)), refIndexSelect(x, dim, idx), `dim ${dim}`);
    t.same(values(x.indexSelect(dim - 3, idx)), refIndexSelect(x, dim, idx), `dim ${dim - 3}`);
  }
  const p = x.permute(2, 0, 1);
  const idx = kiln.tensor([3, 3, 1]);
  t.same(values(kiln.indexSelect(p, 2, idx)), refIndexSelect(p.contiguous(), 2, idx), 'permuted input');
  const strided = kiln.tensor([9, 2, 9, 0, 9, 4]).slice(0, 1, 6, 2);
  t.same(values(kiln.indexSelect(p, 0, strided)), refIndexSelect(p.contiguous(), 0, kiln.tensor([2, 0, 4])), 'strided index');
  const one = kiln.indexSelect(x, 1, kiln.tensor(3));
  t.same(one.shape, [4, 1, 6], '0-d index keeps the dim with size 1');
  t.same(kiln.indexSelect(kiln.scalar(2.5), 0, kiln.tensor([0])).toArray(), 2.5, '0-d input');
  t.same(kiln.indexSelect(x, 2, kiln.tensor([], { dtype: 'int32' })).shape, [4, 5, 0]);
});

t.test('indexSelect gradient', async (t) => {
  const x = randomTensor([3, 4, 2], 9);
  for (let dim = 0; dim < 3; dim++) {
    const idx = kiln.tensor([0, 1, 0, 0, 1]);
    const r = gradcheck((a) => kiln.indexSelect(a, dim, idx), [x]);
    t.ok(r.ok, `dim ${dim}: ${r.detail}`);
  }
});

// ---- gather ----

t.test('gather matches torch.gather semantics', async (t) => {
  const x = randomTensor([4, 5, 3], 10, -1, 1, 'float32');
  for (let dim = 0; dim < 3; dim++) {
    const ishape = [3, 4, 2];
    ishape[dim] = 6; // longer than x along dim, smaller elsewhere
    const idx = randomIndex(ishape, x.shape[dim], dim + 20, dim === 2 ? 'int32' : 'int64');
    const out = kiln.gather(x, dim, idx);
    t.same(out.shape, ishape);
    t.same(values(out), refGather(x, dim, idx), `dim ${dim}`);
  }
  const xt = randomTensor([6, 4], 11).t();
  const idx = randomIndex([3, 1], 6, 12).expand(3, 5);
  t.same(values(kiln.gather(xt, 1, idx)), refGather(xt.contiguous(), 1, idx.contiguous()), 'transposed input, expanded index');
  t.same(values(xt.gather(-1, idx)), refGather(xt.contiguous(), 1, idx.contiguous()), 'method form, negative dim');
  const ints = kiln.tensor([[10, 20, 30], [40, 50, 60]]);
  t.same(kiln.gather(ints, 1, kiln.tensor([[2, 0], [1, 1]])).toArray(), [[30, 10], [50, 50]], 'int64 data');
  t.same(kiln.gather(kiln.scalar(3), 0, kiln.tensor(0)).toArray(), 3, '0-d input and index');
});

t.test('gather gradient with repeated indices', async (t) => {
  const x = randomTensor([3, 4], 13);
  const idx0 = kiln.tensor([[0, 0, 2, 1], [2, 2, 2, 0]]);
  const idx1 = kiln.tensor([[3, 3, 0], [1, 1, 1], [0, 2, 0]]);
  let r = gradcheck((a) => kiln.gather(a, 0, idx0), [x]);
  t.ok(r.ok, `dim 0: ${r.detail}`);
  r = gradcheck((a) => kiln.gather(a, 1, idx1), [x]);
  t.ok(r.ok, `dim 1: ${r.detail}`);
});

// ---- scatterAdd ----

t.test('scatterAdd adds src at index positions, out of place', async (t) => {
  const x = randomTensor([4, 5, 3], 14);
  for (let dim = 0; dim < 3; dim++) {
    const ishape = [3, 4, 2];
    ishape[dim] = 7;
    const idx = randomIndex(ishape, x.shape[dim], dim + 30, dim === 0 ? 'int32' : 'int64');
    const src = randomTensor([7, 7, 7], dim + 40);
    const before = values(x);
    const out = kiln.scatterAdd(x, dim, idx, src);
    t.ok(close(values(out), refScatterAdd(x, dim, idx, src), 1e-12), `dim ${dim}`);
    t.same(values(x), before, 'input unchanged');
  }
  const xt = randomTensor([5, 4], 15).t();
  const srcT = randomTensor([6, 4], 16).t();
  const idx = randomIndex([3, 5], 4, 17);
  t.ok(close(values(xt.scatterAdd(0, idx, srcT)), refScatterAdd(xt.contiguous(), 0, idx, srcT.contiguous()), 1e-12),
    'transposed input and src');
  const ints = kiln.scatterAdd(kiln.zeros([2, 3], { dtype: 'int64' }), 1, kiln.tensor([[0, 0, 2], [1, 1, 1]]), kiln.ones([2, 3], { dtype: 'int64' }));
  t.same(ints.toArray(), [[2, 0, 1], [0, 3, 0]], 'int64 counts');
});

t.test('scatterAdd gradients reach input and src', async (t) => {
  const x = randomTensor([3, 4], 18);
  const idx = kiln.tensor([[2, 2, 0, 1], [2, 0, 0, 0]]);
  const src = randomTensor([2, 4], 19);
  let r = gradcheck((a, b) => kiln.scatterAdd(a, 0, idx, b), [x, src]);
  t.ok(r.ok, `same-shaped src: ${r.detail}`);
  const bigSrc = randomTensor([3, 5], 20);
  r = gradcheck((a, b) => kiln.scatterAdd(a, 1, kiln.tensor([[3, 3], [0, 3]]), b), [x, bigSrc]);
  t.ok(r.ok, `src larger than index: ${r.detail}`);
  const xs = kiln.tensor(values(x), { shape: [3, 4], dtype: 'float64' });
  const sg = kiln.tensor(values(bigSrc), { shape: [3, 5], dtype: 'float64', requiresGrad: true });
  kiln.scatterAdd(xs, 1, kiln.tensor([[3, 3], [0, 3]]), sg).backward(kiln.ones([3, 4], { dtype: 'float64' }));
  t.same(values(sg.grad!), [1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], 'entries outside index get zero gradient');
});

t.test('scatterAdd is parallel, deterministic and correct on large inputs', async (t) => {
  // dim 0: the inner loop runs along rows split across tasks; dim 1: along the indexed dim, one
  // task per row; 1-D: no dim to split, so tasks take disjoint ranges of index values.
  const cases: Array<[string, number[], number, number[]]> = [
    ['dim 0', [8, 150], 0, [1000, 150]],
    ['dim 1', [150, 8], 1, [150, 1000]],
    ['1-D', [50], 0, [100000]],
  ];
  for (const [name, xShape, dim, iShape] of cases) {
    const x = randomTensor(xShape, 21, -1, 1, 'float32');
    const idx = randomIndex(iShape, xShape[dim], 22);
    const src = randomTensor(iShape, 23, -1, 1, 'float32');
    const outs = [1, 2].map((threads) => {
      kiln.setNumThreads(threads);
      return values(kiln.scatterAdd(x, dim, idx, src));
    });
    kiln.setNumThreads(2);
    t.same(outs[0], outs[1], `${name}: bitwise equal with 1 and 2 threads`);
    t.ok(close(outs[1], refScatterAdd(x, dim, idx, src), 1e-4), `${name}: values`);
  }
});

t.test('half types gather and accumulate', async (t) => {
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const w = kiln.tensor([[1, 2], [3, 4], [5, 6]], { dtype, requiresGrad: true });
    const e = kiln.embedding(kiln.tensor([2, 0, 2]), w);
    t.same(e.toArray(), [[5, 6], [1, 2], [5, 6]], `${dtype} embedding`);
    e.backward(kiln.ones([3, 2], { dtype }));
    t.same(w.grad!.toArray(), [[1, 1], [0, 0], [2, 2]], `${dtype} embedding gradient`);
    const sa = kiln.scatterAdd(kiln.zeros([4], { dtype }), 0, kiln.tensor([3, 3, 0]), kiln.full([3], 0.5, { dtype }));
    t.same(sa.toArray(), [0.5, 0, 0, 1], `${dtype} scatterAdd`);
  }
});

// ---- errors ----

t.test('out-of-range and negative indices throw IndexError before any write', async (t) => {
  const w = kiln.zeros([4, 3]);
  const check = (f: () => unknown, op: string, bad: number, range: string) => {
    t.throws(f, kiln.IndexError, `${op} ${bad}`);
    try {
      f();
    } catch (e) {
      const m = (e as Error).message;
      t.ok(m.includes(op) && m.includes(`index ${bad}`) && m.includes(range), m);
    }
  };
  check(() => kiln.embedding(kiln.tensor([0, 4]), w), 'embedding', 4, '[0, 3]');
  check(() => kiln.embedding(kiln.tensor([-1, 0], { dtype: 'int32' }), w), 'embedding', -1, '[0, 3]');
  check(() => kiln.indexSelect(w, 1, kiln.tensor([0, 3])), 'indexSelect', 3, '[0, 2]');
  check(() => kiln.gather(w, 0, kiln.tensor([[1, 9, 0]])), 'gather', 9, '[0, 3]');
  check(() => kiln.scatterAdd(w, 1, kiln.tensor([[0, -2]]), kiln.ones([1, 2])), 'scatterAdd', -2, '[0, 2]');
  check(() => kiln.indexSelect(kiln.zeros([0, 2]), 0, kiln.tensor([0])), 'indexSelect', 0, 'size 0');
  const big = kiln.tensor([...new Array(100000).fill(1), 7]);
  check(() => kiln.embedding(big, w), 'embedding', 7, '[0, 3]');

  // In place through the native entry points: a bad index at the very end leaves the target untouched.
  const target = kiln.zeros([4, 3]);
  const idx = kiln.tensor([0, 1, 2, 3, 0, 1, 4]);
  t.throws(() => native.embeddingBackward(target._h, idx._h, kiln.ones([7, 3])._h), kiln.IndexError);
  t.same(values(target), new Array(12).fill(0), 'embeddingBackward wrote nothing');
  t.throws(() => native.scatterAdd(target._h, 0, kiln.tensor([[0, 5, 1]])._h, kiln.ones([1, 3])._h), kiln.IndexError);
  t.same(values(target), new Array(12).fill(0), 'scatterAdd wrote nothing');
});

t.test('bad dtypes, shapes and dims', async (t) => {
  const x = kiln.zeros([3, 4]);
  const fidx = kiln.tensor([[0, 1]], { dtype: 'float32' });
  t.throws(() => kiln.embedding(kiln.tensor([0.5]), x), kiln.DTypeError);
  t.throws(() => kiln.gather(x, 1, fidx), { name: 'DTypeError', message: /gather: index must be int32 or int64, got float32/ });
  t.throws(() => kiln.indexSelect(x, 0, kiln.tensor([true])), kiln.DTypeError);
  t.throws(() => kiln.scatterAdd(x, 1, fidx, x), kiln.DTypeError);
  t.throws(() => kiln.scatterAdd(x, 1, kiln.tensor([[0]]), kiln.ones([1, 1], { dtype: 'float64' })), {
    name: 'DTypeError', message: /scatterAdd: src dtype float64 does not match input dtype float32/,
  });
  t.throws(() => kiln.scatterAdd(kiln.zeros([2], { dtype: 'bool' }), 0, kiln.tensor([0]), kiln.zeros([1], { dtype: 'bool' })), kiln.DTypeError);
  t.throws(() => kiln.embedding(kiln.tensor([0]), kiln.zeros([4])), { name: 'ShapeError', message: /embedding: weight must be 2-D.*\[4\]/ });
  t.throws(() => kiln.indexSelect(x, 0, kiln.tensor([[0]])), { name: 'ShapeError', message: /indexSelect: index must be 1-D/ });
  t.throws(() => kiln.gather(x, 0, kiln.tensor([0])), { name: 'ShapeError', message: /gather: index \[1\] must have as many dims as input \[3, 4\]/ });
  t.throws(() => kiln.gather(x, 0, kiln.tensor([[0, 0, 0, 0, 0]])), { name: 'ShapeError', message: /larger than input \[3, 4\] at dim 1/ });
  t.throws(() => kiln.scatterAdd(x, 0, kiln.tensor([[0, 0]]), kiln.ones([1, 1])), { name: 'ShapeError', message: /larger than src \[1, 1\]/ });
  t.throws(() => kiln.gather(x, 2, kiln.tensor([[0]])), { name: 'IndexError', message: /gather: dim 2 out of range/ });
  t.throws(() => kiln.indexSelect(x, -3, kiln.tensor([0])), kiln.IndexError);
  t.throws(() => kiln.scatterAdd(x, 5, kiln.tensor([[0]]), x), kiln.IndexError);
  // The native kernels check shapes too, whatever the caller passes.
  t.throws(() => native.gather(x._h, 0, kiln.tensor([[0]])._h, kiln.zeros([2, 2])._h), kiln.ShapeError);
  t.throws(() => native.indexSelect(x._h, 0, kiln.tensor([0])._h, kiln.zeros([2, 4])._h), kiln.ShapeError);
  t.throws(() => native.scatterAdd(x.t()._h, 0, kiln.tensor([[0]])._h, kiln.ones([1, 1])._h), kiln.ValueError);
});
