// DataLoader: order, batching, dropLast, seeded shuffling that repeats across runs and differs across
// epochs, default and custom collate, TensorDataset, mid-epoch resume, memory; and the Rng.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { DataLoader, Dataset, Rng, TensorDataset, defaultCollate } from '../../lib/data/index';

/** Items 0..n-1 as numbers. */
const numbers = (n: number): Dataset<number> => ({ length: n, get: (i) => i });
const flat = (b: unknown): number[] => (b as Tensor).toArray() as number[];
const epochOf = <B>(loader: DataLoader<unknown, B>): number[][] => [...loader].map((b) => flat(b));

t.test('batches in order; the last one smaller unless dropLast', async (t) => {
  const loader = new DataLoader(numbers(10), { batchSize: 4 });
  t.equal(loader.length, 3);
  const batches = [...loader];
  t.same(batches.map(flat), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]);
  t.equal((batches[0] as Tensor).dtype, 'int64', 'whole numbers collate to int64');
  const dropped = new DataLoader(numbers(10), { batchSize: 4, dropLast: true });
  t.equal(dropped.length, 2);
  t.same(epochOf(dropped), [[0, 1, 2, 3], [4, 5, 6, 7]]);
  t.same(epochOf(new DataLoader(numbers(3), { batchSize: 5, dropLast: true })), [], 'fewer items than a batch');
  t.same(epochOf(new DataLoader(numbers(0))), []);
});

t.test('shuffling repeats with a seed, differs across epochs, and visits every item once', async (t) => {
  const a = new DataLoader(numbers(50), { batchSize: 8, shuffle: true, seed: 7 });
  const b = new DataLoader(numbers(50), { batchSize: 8, shuffle: true, seed: 7 });
  const a0 = epochOf(a), a1 = epochOf(a);
  t.same(epochOf(b), a0, 'epoch 0 repeats');
  t.same(epochOf(b), a1, 'epoch 1 repeats');
  t.notSame(a1, a0, 'epochs differ');
  t.same(a0.flat().sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i), 'a permutation');
  t.notSame(a0.flat(), Array.from({ length: 50 }, (_, i) => i), 'not the identity');
  t.notSame(epochOf(new DataLoader(numbers(50), { batchSize: 8, shuffle: true, seed: 8 })), a0, 'another seed, another order');
  const c = new DataLoader(numbers(50), { batchSize: 8, shuffle: true, seed: 7 });
  c.epoch = 1;
  t.same(epochOf(c), a1, 'setting epoch jumps to its order');
  t.same([...a.order(3)], [...new Rng(7, 3).permutation(50)], 'epoch e is the permutation of (seed, e)');
  const random1 = new DataLoader(numbers(50), { shuffle: true }), random2 = new DataLoader(numbers(50), { shuffle: true });
  t.not(random1.seed, random2.seed, 'without a seed each loader draws one');
});

t.test('default collate: tensors stack, numbers and booleans become tensors, arrays and objects recurse', async (t) => {
  const ds: Dataset<{ x: Tensor; y: number; ok: boolean; name: string; pair: [number, number] }> = {
    length: 3,
    get: (i) => ({ x: kiln.full([2], i), y: i + 0.5, ok: i % 2 === 0, name: `n${i}`, pair: [i, 10 * i] }),
  };
  const [batch] = [...new DataLoader(ds, { batchSize: 3 })] as Array<{ x: Tensor; y: Tensor; ok: Tensor; name: string[]; pair: Tensor[] }>;
  t.same(batch.x.shape, [3, 2]);
  t.same(batch.x.toArray(), [[0, 0], [1, 1], [2, 2]]);
  t.equal(batch.y.dtype, 'float32');
  t.same(batch.y.toArray(), [0.5, 1.5, 2.5]);
  t.same(batch.ok.toArray(), [true, false, true]);
  t.same(batch.name, ['n0', 'n1', 'n2']);
  t.same(batch.pair.map((p) => p.toArray()), [[0, 1, 2], [0, 10, 20]]);
  t.throws(() => defaultCollate([1, kiln.zeros([1])]), kiln.ValueError);
  t.throws(() => defaultCollate([[1, 2], [1]]), kiln.ValueError);
  t.throws(() => defaultCollate([{ a: 1 }, { b: 1 }]), kiln.ValueError);
  t.throws(() => defaultCollate([null]), kiln.ValueError);
  t.throws(() => defaultCollate([]), kiln.ValueError);
});

t.test('a custom collate gets the items of each batch', async (t) => {
  const loader = new DataLoader(numbers(7), { batchSize: 3, collate: (items: number[]) => items.join('+') });
  t.same([...loader], ['0+1+2', '3+4+5', '6']);
});

t.test('per-item tensors are freed once collated; batches belong to the caller', async (t) => {
  const ds: Dataset<Tensor> = { length: 20, get: (i) => kiln.full([3], i) };
  const loader = new DataLoader(ds, { batchSize: 4, shuffle: true, seed: 1 });
  const before = kiln.memory().tensors;
  for (const batch of loader) (batch as Tensor).dispose();
  t.equal(kiln.memory().tensors, before);
});

t.test('TensorDataset: item views, and batches by indexSelect through the loader', async (t) => {
  const x = kiln.arange(12).reshape(6, 2), y = kiln.arange(6);
  const ds = new TensorDataset(x, y);
  t.equal(ds.length, 6);
  t.same(ds.get(2).map((v) => v.toArray()), [[4, 5], 2]);
  t.throws(() => ds.get(6), kiln.IndexError);
  t.throws(() => new TensorDataset(x, kiln.arange(5)), kiln.ShapeError);
  const loader = new DataLoader(ds, { batchSize: 4, shuffle: true, seed: 3 });
  const order = [...loader.order(0)];
  const batches = [...loader] as Tensor[][];
  t.same(batches.map((b) => b[1].toArray()), [order.slice(0, 4), order.slice(4)]);
  t.same(batches[0][0].toArray(), order.slice(0, 4).map((i) => [2 * i, 2 * i + 1]));
  const viaGet = new DataLoader(ds, { batchSize: 4, collate: (items: Tensor[][]) => defaultCollate(items) });
  t.same(([...viaGet][1] as Tensor[])[0].toArray(), [[8, 9], [10, 11]], 'the item-by-item path agrees');
});

t.test('stateDict resumes in the middle of an epoch', async (t) => {
  const a = new DataLoader(numbers(40), { batchSize: 5, shuffle: true, seed: 11 });
  epochOf(a);
  const it = a[Symbol.iterator]();
  const seen = [flat(it.next().value), flat(it.next().value)];
  const sd = a.stateDict();
  t.same(sd, { seed: 11, epoch: 1, position: 2 });
  const rest = [];
  for (let r = it.next(); !r.done; r = it.next()) rest.push(flat(r.value));
  t.same(a.stateDict(), { seed: 11, epoch: 2, position: 0 }, 'a finished epoch points at the next');
  const b = new DataLoader(numbers(40), { batchSize: 5, shuffle: true, seed: 99 });
  b.loadStateDict(sd);
  t.same(epochOf(b), rest, 'continues with the batches the original had left');
  t.same(epochOf(b), epochOf(a), 'and the epochs after it match');
  t.equal(seen.length, 2);
  t.throws(() => b.loadStateDict({ seed: 1, epoch: 0, position: 9 }), kiln.ValueError);
  t.throws(() => b.loadStateDict({ seed: -1, epoch: 0, position: 0 }), kiln.ValueError);
});

t.test('bad DataLoader arguments', async (t) => {
  t.throws(() => new DataLoader(numbers(3), { batchSize: 0 }), kiln.ValueError);
  t.throws(() => new DataLoader(numbers(3), { seed: 1.5 }), kiln.ValueError);
  t.throws(() => new DataLoader({} as Dataset<number>), kiln.ValueError);
});

t.test('Rng: repeatable streams, unbiased ranges, state round trip', async (t) => {
  const a = new Rng(42), b = new Rng(42), c = new Rng(42, 1);
  const seqA = Array.from({ length: 5 }, () => a.nextUint32());
  t.same(Array.from({ length: 5 }, () => b.nextUint32()), seqA);
  t.notSame(Array.from({ length: 5 }, () => c.nextUint32()), seqA, 'another stream differs');
  t.notSame(Array.from({ length: 5 }, () => new Rng(2 ** 40).nextUint32()), Array.from({ length: 5 }, () => new Rng(0).nextUint32()), 'high seed bits count');
  const r = new Rng(5);
  const counts = new Array(6).fill(0);
  for (let i = 0; i < 60000; i++) counts[r.below(6)]++;
  t.ok(counts.every((n) => Math.abs(n - 10000) < 500), `below(6) is uniform: ${counts}`);
  let inRange = true;
  for (let i = 0; i < 1000; i++) {
    const v = r.below(2 ** 40 + 3);
    const f = r.next();
    inRange &&= Number.isInteger(v) && v >= 0 && v < 2 ** 40 + 3 && f >= 0 && f < 1;
  }
  t.ok(inRange, 'large ranges and floats stay in range');
  const s = r.getState();
  const next = [r.nextUint32(), r.nextUint32()];
  r.setState(s);
  t.same([r.nextUint32(), r.nextUint32()], next);
  t.throws(() => r.setState([0, 0, 0, 0]), kiln.ValueError);
  t.throws(() => r.below(0), kiln.ValueError);
  t.throws(() => new Rng(-1), kiln.ValueError);
});
