// Views and joins: shapes, strides, shared storage, copies, and their gradients.
import t from 'tap';
import * as kiln from '../lib/index';
import { native } from '../lib/native';
import { gradcheck, randomTensor, values } from './helpers/gradcheck';

t.test('reshape and view share storage when the layout allows', async (t) => {
  const a = kiln.arange(12).reshape(3, 4);
  const b = a.view(2, 6);
  t.same(b.shape, [2, 6]);
  t.ok(native.sameStorage(a._h, b._h));
  t.same(a.reshape(-1, 2).shape, [6, 2]);
  t.throws(() => a.reshape(5, -1), kiln.ShapeError);
  t.throws(() => a.view(-1, -1), kiln.ShapeError);
  const tr = a.t();
  t.throws(() => tr.view(12), kiln.ShapeError);
  t.same(values(tr.reshape(12)), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
});

t.test('permute, transpose, expand, squeeze, unsqueeze, flatten', async (t) => {
  const a = kiln.arange(24).reshape(2, 3, 4);
  const p = a.permute(2, 0, 1);
  t.same(p.shape, [4, 2, 3]);
  t.same(p.strides, [1, 12, 4]);
  t.same(values(p.contiguous()).slice(0, 6), [0, 4, 8, 12, 16, 20]);
  t.same(a.transpose(0, -1).shape, [4, 3, 2]);
  const e = kiln.tensor([[1], [2]]).expand(2, 3);
  t.same(e.toArray(), [[1, 1, 1], [2, 2, 2]]);
  t.same(e.strides, [1, 0]);
  t.throws(() => kiln.tensor([1, 2]).expand(3), kiln.ShapeError);
  t.same(kiln.zeros([1, 3, 1]).squeeze().shape, [3]);
  t.same(kiln.zeros([1, 3, 1]).squeeze(0).shape, [3, 1]);
  t.same(kiln.zeros([3]).unsqueeze(0).shape, [1, 3]);
  t.same(kiln.zeros([3]).unsqueeze(-1).shape, [3, 1]);
  t.same(a.flatten(1).shape, [2, 12]);
  t.same(a.flatten().shape, [24]);
  t.same(a.unflatten(2, [2, -1]).shape, [2, 3, 2, 2]);
  t.throws(() => a.permute(0, 0, 1), kiln.IndexError);
  t.throws(() => a.transpose(0, 3), kiln.IndexError);
});

t.test('slice, narrow, select, split, chunk', async (t) => {
  const a = kiln.arange(10);
  t.same(a.slice(0, 2, 8, 3).toArray(), [2, 5]);
  t.same(a.slice(0, -3).toArray(), [7, 8, 9]);
  t.same(a.narrow(0, 1, 3).toArray(), [1, 2, 3]);
  t.throws(() => a.narrow(0, 8, 3), kiln.IndexError);
  const m = kiln.arange(12).reshape(3, 4);
  t.same(m.select(1, -1).toArray(), [3, 7, 11]);
  t.throws(() => m.select(0, 3), kiln.IndexError);
  t.same(m.split(2, 1).map((x) => x.shape), [[3, 2], [3, 2]]);
  t.same(m.split([1, 2], 0).map((x) => x.shape), [[1, 4], [2, 4]]);
  t.throws(() => m.split([1, 1], 0), kiln.ShapeError);
  t.same(kiln.arange(5).chunk(2).map((x) => x.toArray()), [[0, 1, 2], [3, 4]]);
});

t.test('cat, stack, repeat', async (t) => {
  const a = kiln.tensor([[1, 2]]), b = kiln.tensor([[3, 4], [5, 6]]);
  t.same(kiln.cat([a, b]).toArray(), [[1, 2], [3, 4], [5, 6]]);
  t.same(kiln.cat([b, b], 1).toArray(), [[3, 4, 3, 4], [5, 6, 5, 6]]);
  t.throws(() => kiln.cat([a, b], 1), kiln.ShapeError);
  t.same(kiln.stack([a, a], 1).shape, [1, 2, 2]);
  t.same(kiln.tensor([1, 2]).repeat(2, 2).toArray(), [[1, 2, 1, 2], [1, 2, 1, 2]]);
});

t.test('views of views stay inside storage; native rejects bad views', async (t) => {
  const a = kiln.arange(6);
  t.throws(() => native.view(a._h, [7], [1], 0), /reaches element/);
  t.throws(() => native.view(a._h, [2], [-1], 3), /negative stride/);
});

t.test('gradients of views and joins (finite differences, float64)', async (t) => {
  const x = randomTensor([2, 3, 4], 1);
  const y = randomTensor([2, 2, 4], 2);
  const cases: Array<[string, (...xs: kiln.Tensor[]) => kiln.Tensor, kiln.Tensor[]]> = [
    ['reshape', (a) => a.reshape(6, 4), [x]],
    ['permute', (a) => a.permute(2, 0, 1), [x]],
    ['transpose+contiguous', (a) => a.transpose(0, 2).contiguous(), [x]],
    ['expand', (a) => a.slice(1, 0, 1).expand(2, 5, 4), [x]],
    ['slice step', (a) => a.slice(2, 1, 4, 2), [x]],
    ['select', (a) => a.select(1, 2), [x]],
    ['narrow', (a) => a.narrow(2, 1, 2), [x]],
    ['squeeze/unsqueeze', (a) => a.unsqueeze(1).squeeze(1), [x]],
    ['cat', (a, b) => kiln.cat([a, b], 1), [x, y]],
    ['stack', (a, b) => kiln.stack([a.slice(1, 0, 2), b], 0), [x, y]],
    ['split', (a) => a.split([1, 2], 1)[1], [x]],
    ['repeat', (a) => a.repeat(2, 1, 1), [x]],
  ];
  for (const [name, f, inputs] of cases) {
    const r = gradcheck(f, inputs);
    t.ok(r.ok, `${name}: ${r.detail}`);
  }
});

t.test('empty tensors are contiguous and work through row ops', async (t) => {
  const e = kiln.zeros([3, 0]);
  t.ok(e.isContiguous());
  t.same(e.layerNorm(0).shape, [3, 0]);
  t.same(kiln.zeros([0, 4]).softmax(-1).shape, [0, 4]);
});
