// Tensor creation, dtypes, reading back, printing, conversion, and loading from ESM and CommonJS.
import t from 'tap';
import { execFileSync } from 'child_process';
import * as path from 'path';
import * as kiln from '../lib/index';

t.test('creation from nested arrays infers shape and dtype like PyTorch', async (t) => {
  const a = kiln.tensor([[1, 2, 3], [4, 5, 6]]);
  t.same(a.shape, [2, 3]);
  t.equal(a.dtype, 'int64');
  t.equal(kiln.tensor([1.5, 2]).dtype, 'float32');
  t.equal(kiln.tensor([true, false]).dtype, 'bool');
  t.same(kiln.tensor([true, false]).toArray(), [true, false]);
  t.equal(kiln.tensor(3.5).ndim, 0);
  t.equal(kiln.tensor(3.5).item(), 3.5);
  t.same(kiln.tensor([]).shape, [0]);
  t.throws(() => kiln.tensor([[1, 2], [3]]), kiln.ShapeError);
  t.throws(() => kiln.tensor([1], { dtype: 'float8' as kiln.DType }), kiln.DTypeError);
});

t.test('creation from TypedArrays keeps their type and takes a shape', async (t) => {
  const f = kiln.tensor(new Float32Array([1, 2, 3, 4]), { shape: [2, 2] });
  t.equal(f.dtype, 'float32');
  t.same(f.toArray(), [[1, 2], [3, 4]]);
  t.equal(kiln.tensor(new Float64Array(3)).dtype, 'float64');
  t.equal(kiln.tensor(new Int32Array(3)).dtype, 'int32');
  t.equal(kiln.tensor(new BigInt64Array([5n, -7n])).dtype, 'int64');
  t.same(kiln.tensor(new BigInt64Array([5n, -7n])).toArray(), [5, -7]);
  t.throws(() => kiln.tensor(new Float32Array(5), { shape: [2, 2] }), kiln.ShapeError);
});

t.test('zeros, ones, full, arange, linspace, eye and the *Like forms', async (t) => {
  t.same(kiln.zeros([2, 2]).toArray(), [[0, 0], [0, 0]]);
  t.same(kiln.ones([3], { dtype: 'int32' }).toArray(), [1, 1, 1]);
  t.same(kiln.full([2], 7.5).toArray(), [7.5, 7.5]);
  t.same(kiln.arange(2, 8, 2).toArray(), [2, 4, 6]);
  t.equal(kiln.arange(5).dtype, 'int64');
  t.same(kiln.arange(0, 1, 0.25).toArray(), [0, 0.25, 0.5, 0.75]);
  t.equal(kiln.arange(0, 1, 0.25).dtype, 'float32');
  t.same(kiln.linspace(-1, 1, 5).toArray(), [-1, -0.5, 0, 0.5, 1]);
  t.same(kiln.eye(2, 3).toArray(), [[1, 0, 0], [0, 1, 0]]);
  const base = kiln.ones([2, 3], { dtype: 'float64' });
  t.equal(kiln.zerosLike(base).dtype, 'float64');
  t.same(kiln.fullLike(base, 2).shape, [2, 3]);
  t.throws(() => kiln.zeros([-1]), kiln.ShapeError);
  t.throws(() => kiln.arange(0, 5, 0), kiln.ValueError);
});

t.test('bfloat16 and float16 store values rounded and convert back to float32', async (t) => {
  const vals = [1, -2.5, 3.140625, 1e-3, 65504, 1e-8];
  const h = kiln.tensor(vals, { dtype: 'float16' });
  const back = Array.from(h.dataSync() as Float32Array);
  t.same(back.slice(0, 3), [1, -2.5, 3.140625]);
  t.ok(Math.abs(back[3] - 1e-3) < 1e-6, 'float16 keeps 1e-3 to ~11 bits');
  t.equal(back[4], 65504, 'largest float16');
  t.ok(back[5] === 0 || Math.abs(back[5]) < 1e-7, 'tiny values underflow');
  t.equal(kiln.tensor([70000], { dtype: 'float16' }).item(), Infinity, 'overflow rounds to inf');
  const b = kiln.tensor([1, 3.140625, 1e30], { dtype: 'bfloat16' });
  const bb = Array.from(b.dataSync() as Float32Array);
  t.equal(bb[0], 1);
  t.equal(bb[1], 3.140625);
  t.ok(Math.abs(bb[2] / 1e30 - 1) < 1 / 128, 'bfloat16 keeps the float32 range');
  t.equal(kiln.tensor([1.00390625], { dtype: 'bfloat16' }).item(), 1, 'round to nearest even');
  t.equal(b.to('float32').dtype, 'float32');
});

t.test('conversion between dtypes', async (t) => {
  const a = kiln.tensor([-1.7, 0, 2.9]);
  t.same(a.to('int32').toArray(), [-1, 0, 2]);
  t.same(a.to('bool').toArray(), [true, false, true]);
  t.same(kiln.tensor([true, false]).to('float64').toArray(), [1, 0]);
  t.equal(a.to('float32'), a, 'same dtype returns the tensor itself');
  t.throws(() => a.to('cuda:0'), kiln.DeviceError);
});

t.test('printing looks like PyTorch', async (t) => {
  t.equal(kiln.tensor([[1, 2], [3, 4]]).toString(), 'tensor([[1, 2],\n        [3, 4]], shape=[2, 2], dtype=int64)');
  t.equal(kiln.tensor([0.5, 1.25]).toString(), 'tensor([0.5000, 1.2500], shape=[2], dtype=float32)');
  t.match(kiln.tensor([1e-6, 1]).toString(), /1\.0000e-6/);
  const big = kiln.zeros([2000]).toString();
  t.match(big, /\.\.\./, 'large tensors are summarized');
  const g = kiln.ones([2], { requiresGrad: true });
  t.match(g.toString(), /requiresGrad=true/);
});

t.test('the package loads from CommonJS and ESM with the same exports', async (t) => {
  const root = path.join(__dirname, '..');
  const cjs = execFileSync(process.execPath, ['-e', "const k=require('./dist'); console.log(k.tensor([1,2]).sum ? 'ok' : 'no')"], { cwd: root, encoding: 'utf8' });
  t.equal(cjs.trim(), 'ok');
  const esm = execFileSync(process.execPath, ['--input-type=module', '-e', "import { tensor, ShapeError } from 'kiln'; import k from 'kiln'; console.log(typeof tensor, typeof ShapeError, typeof k.zeros)"], { cwd: root, encoding: 'utf8' });
  t.equal(esm.trim(), 'function function function');
});

t.test('build info names what the build enabled', async (t) => {
  const info = kiln.buildInfo();
  t.type(info.openmp, 'boolean');
  t.ok(['openblas', 'builtin'].includes(info.blas));
  t.ok(info.threads >= 1);
});
