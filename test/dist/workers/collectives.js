// Every collective of the world group and a subgroup, for test/dist/process_group.test.ts: prints one
// JSON line per check with what this rank got, so the test can compare with the expected values.
const kiln = require('../../../dist');
const { dist } = kiln;

const out = (name, value) => console.log(JSON.stringify({ name, rank: dist.rank(), value }));
const arr = (t) => Array.from(t.dataSync(), Number);
const f32 = (xs) => kiln.tensor(xs, { dtype: 'float32' });

(async () => {
  const g = await dist.initProcessGroup({ backend: 'gloo', timeoutMs: 30000 });
  const r = dist.rank(), n = dist.worldSize();
  out('world', { rank: r, size: n, backend: g.backend, local: dist.localRank() });

  const s = f32([r + 1, 2 * (r + 1)]);
  await dist.allReduce(s);
  out('sum', arr(s));
  for (const op of ['avg', 'max', 'min']) {
    const t = f32([r, -r]);
    await dist.allReduce(t, { op });
    out(op, arr(t));
  }
  for (const dtype of ['float64', 'int32', 'int64', 'bfloat16', 'float16']) {
    const t = kiln.tensor([r + 1, 3], { dtype });
    await dist.allReduce(t);
    out(`sum-${dtype}`, arr(t));
  }
  const big = kiln.full([1 << 20], r + 1);   // several of Gloo's 1 MiB segments
  await dist.allReduce(big);
  out('big', [big.min().item(), big.max().item()]);

  const b = r === n - 1 ? f32([5, 6, 7]) : kiln.zeros([3]);
  await dist.broadcast(b, n - 1);
  out('broadcast', arr(b));

  const list = Array.from({ length: n }, () => kiln.zeros([2]));
  await dist.allGather(list, f32([r, 10 * r]));
  out('allGather-list', list.map(arr));
  const flat = kiln.zeros([2 * n]);
  await dist.allGather(flat, f32([r, 10 * r]));
  out('allGather-flat', arr(flat));

  const rs = kiln.zeros([2]);
  await dist.reduceScatter(rs, f32(Array.from({ length: 2 * n }, (_, i) => i + r)));
  out('reduceScatter', arr(rs));
  const rsl = kiln.zeros([2]);
  await dist.reduceScatter(rsl, Array.from({ length: n }, (_, i) => f32([i, r])), { op: 'max' });
  out('reduceScatter-list', arr(rsl));

  // Point to point: a ring, every rank sending and receiving at once (the posts must not wait on each other).
  const got = kiln.zeros([2]);
  const sent = dist.send(f32([r, r * r]), (r + 1) % n, { tag: 7 });
  await dist.recv(got, (r + n - 1) % n, { tag: 7 });
  await sent;
  out('ring', arr(got));

  // Async handles: several in flight at once, awaited out of order.
  const ts = [1, 2, 3].map((k) => f32([k * (r + 1)]));
  const works = ts.map((t) => dist.allReduce(t));
  await works[2].wait();
  await Promise.all(works);
  out('async', { values: ts.map((t) => t.item()), completed: works.every((w) => w.isCompleted()) });

  // A subgroup of the even ranks; odd ranks get null.
  const evens = Array.from({ length: n }, (_, i) => i).filter((i) => i % 2 === 0);
  const sub = await dist.newGroup(evens);
  if (sub) {
    const t = f32([r]);
    await sub.allReduce(t);
    out('subgroup', { value: t.item(), rank: sub.rank, size: sub.size, ranks: sub.ranks });
    const o = kiln.zeros([1]);
    if (evens.length > 1) {
      await dist.broadcast(o.fill_(r === evens[1] ? 42 : 0), evens[1], { group: sub });
      out('subgroup-broadcast', o.item());
    }
  } else {
    out('subgroup', null);
  }
  out('objects', await g.allGatherObject({ rank: r, text: 'x'.repeat(r) }));

  await dist.barrier();
  dist.destroyProcessGroup();
  out('done', dist.isInitialized());
})().catch((e) => {
  console.log(JSON.stringify({ name: 'error', rank: dist.rank(), value: `${e.name}: ${e.message}` }));
  process.exit(1);
});
