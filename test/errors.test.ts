// Bad input gets a typed error naming the op, the shapes and the dtypes; nothing crashes the process.
import t from 'tap';
import * as kiln from '../lib/index';
import { native } from '../lib/native';

t.test('errors are typed, carry code and op, and keep a JavaScript stack', async (t) => {
  const err = t.throws(() => kiln.ones([2, 3]).matmul(kiln.ones([4, 5]))) as unknown as kiln.KilnError;
  t.ok(err instanceof kiln.ShapeError);
  t.ok(err instanceof kiln.KilnError);
  t.equal(err.code, 'ShapeError');
  t.equal(err.op, 'matmul');
  t.match(err.message, /\[2, 3\]/);
  t.match(err.message, /\[4, 5\]/);
  t.match(err.stack!, /errors\.test/);
});

t.test('failed broadcasting names both shapes', async (t) => {
  t.throws(() => kiln.ones([2, 3]).add(kiln.ones([4])), { name: 'ShapeError', message: /\[2, 3\].*\[4\]/ });
});

t.test('a float tensor used as an index is a DTypeError', async (t) => {
  const w = kiln.ones([10, 4]);
  t.throws(() => kiln.embedding(kiln.tensor([1.0, 2.5]), w), kiln.DTypeError);
  t.throws(() => w.indexSelect(0, kiln.tensor([0], { dtype: 'float32' })), kiln.DTypeError);
  t.throws(() => w.gather(0, kiln.zeros([1, 4])), kiln.DTypeError);
});

t.test('out-of-range indices are checked, not read', async (t) => {
  const w = kiln.ones([10, 4]);
  t.throws(() => kiln.embedding(kiln.tensor([3, 10]), w), { name: 'IndexError', message: /10/ });
  t.throws(() => kiln.embedding(kiln.tensor([-1]), w), kiln.IndexError);
  t.throws(() => w.indexSelect(0, kiln.tensor([1e9])), kiln.IndexError);
  t.throws(() => w.gather(1, kiln.tensor([[0, 1, 2, 4]])), kiln.IndexError);
  t.throws(() => kiln.crossEntropy(kiln.zeros([2, 3]), kiln.tensor([0, 3])), kiln.IndexError);
});

t.test('use after dispose is a DisposedError, also from native calls', async (t) => {
  const a = kiln.ones([3]);
  const b = kiln.ones([3]);
  b.dispose();
  t.throws(() => a.add(b), kiln.DisposedError);
  t.throws(() => b.toArray(), kiln.DisposedError);
  t.throws(() => native.copy(a._h, b._h), kiln.DisposedError);
});

t.test('native functions reject non-handles and bad arguments without crashing', async (t) => {
  const fakes = [undefined, null, 1, 'x', {}, [], new Float32Array(2)];
  for (const f of fakes) t.throws(() => native.copy(f as never, f as never), kiln.ValueError);
  t.throws(() => native.empty([2, -1], 0, -1), kiln.ShapeError);
  t.throws(() => native.empty([2], 99, -1), kiln.DTypeError);
  t.throws(() => native.fromBytes(new Uint8Array(3), [2], 0, -1), kiln.ValueError);
  t.throws(() => native.view(kiln.ones([2])._h, [3], [1], 0), kiln.IndexError);
});

t.test('dtype mismatches name the dtypes', async (t) => {
  t.throws(() => kiln.ones([2, 2], { dtype: 'int32' }).matmul(kiln.ones([2, 2])), { name: 'DTypeError', message: /int32/ });
  t.throws(() => kiln.ones([2, 3], { dtype: 'int64' }).softmax(-1), { name: 'DTypeError', message: /softmax: input must be floating point, got int64/ });
  t.throws(() => kiln.ones([2]).add(kiln.ones([2], { dtype: 'float64' })).matmul(kiln.ones([2], { dtype: 'int64' })), { name: 'DTypeError', message: /int64/ });
});

t.test('bad dims are IndexErrors', async (t) => {
  t.throws(() => kiln.ones([2, 2]).sum(2), kiln.IndexError);
  t.throws(() => kiln.ones([2, 2]).softmax(-3), kiln.IndexError);
});

t.test('CUDA requested without a CUDA build or GPU is a DeviceError', async (t) => {
  if (kiln.buildInfo().cuda) return t.pass('CUDA build: covered by test/cuda');
  t.throws(() => kiln.zeros([2], { device: 'cuda:0' }), kiln.DeviceError);
  t.throws(() => kiln.zeros([2], { device: 'gpu' }), kiln.DeviceError);
});
