// Process groups on Gloo: every collective on 2 and 4 processes against the values it must give, a
// subgroup, point to point in a ring, async handles; what fails (a peer that exits, a rank that
// passes another size, a rank that never arrives, an unreachable master) ends in a DistError
// within the timeout; bad arguments get clear errors. The multi-process checks run
// test/dist/workers/*.js with the compiled package (dist/).
import t from 'tap';
import * as kiln from '../../lib';
import { DistError, DTypeError, ValueError } from '../../lib';
import { freePort, runRanks, RankResult } from './helpers';

const { dist } = kiln;
const gloo = dist.isBackendAvailable('gloo');

/** name -> value of what each rank printed. */
function results(rs: RankResult[]): Array<Map<string, any>> {
  return rs.map((r) => new Map(r.json.filter((j) => j.name).map((j) => [j.name, j.value])));
}

function expected(n: number, r: number): Record<string, unknown> {
  const ranks = Array.from({ length: n }, (_, i) => i);
  const sumTo = (f: (i: number) => number) => ranks.reduce((a, i) => a + f(i), 0);
  const evens = ranks.filter((i) => i % 2 === 0);
  return {
    world: { rank: r, size: n, backend: 'gloo', local: r },
    sum: [sumTo((i) => i + 1), sumTo((i) => 2 * (i + 1))],
    avg: [sumTo((i) => i) / n, -sumTo((i) => i) / n],
    max: [n - 1, 0],
    min: [0, -(n - 1)],
    ...Object.fromEntries(['float64', 'int32', 'int64', 'bfloat16', 'float16'].map((d) => [`sum-${d}`, [sumTo((i) => i + 1), 3 * n]])),
    big: [sumTo((i) => i + 1), sumTo((i) => i + 1)],
    broadcast: [5, 6, 7],
    'allGather-list': ranks.map((i) => [i, 10 * i]),
    'allGather-flat': ranks.flatMap((i) => [i, 10 * i]),
    reduceScatter: [0, 1].map((k) => sumTo((i) => 2 * r + k + i)),
    'reduceScatter-list': [r, n - 1],
    ring: [(r + n - 1) % n, ((r + n - 1) % n) ** 2],
    async: { values: [1, 2, 3].map((k) => k * sumTo((i) => i + 1)), completed: true },
    subgroup: r % 2 === 0 ? { value: sumTo((i) => (i % 2 === 0 ? i : 0)), rank: evens.indexOf(r), size: evens.length, ranks: evens } : null,
    objects: ranks.map((i) => ({ rank: i, text: 'x'.repeat(i) })),
    done: false,
  };
}

t.test('collectives on 2 and 4 processes give the values they must', { skip: !gloo && 'built without Gloo' }, async (t) => {
  for (const n of [2, 4]) {
    const rs = await runRanks('collectives.js', n);
    const got = results(rs);
    rs.forEach((r, rank) => {
      t.equal(r.code, 0, `${n} ranks: rank ${rank} exits 0 ${r.stderr}${got[rank].get('error') ?? ''}`);
      for (const [name, value] of Object.entries(expected(n, rank))) t.same(got[rank].get(name), value, `${n} ranks, rank ${rank}: ${name}`);
      if (n > 2 && rank % 2 === 0) t.equal(got[rank].get('subgroup-broadcast'), 42, `${n} ranks, rank ${rank}: broadcast in the subgroup from world rank 2`);
    });
  }
});

t.test('what cannot finish ends in a DistError within the timeout, naming the op and the rank', { skip: !gloo && 'built without Gloo' }, async (t) => {
  // A peer that exits: the survivor learns at once (the connection closes).
  let rs = await runRanks('failure.js', 2, ['peer-exits', '3000']);
  let e = rs[0].json.find((j) => 'error' in j);
  t.equal(e?.code, 'DistError', rs[0].stdout + rs[0].stderr);
  t.match(e?.error, /^allReduce: rank 0 of 2 \(gloo\): /);
  t.ok(e?.ms < 3000, `within the timeout (${e?.ms} ms)`);
  let again = rs[0].json.find((j) => 'again' in j);
  t.match(again?.again, /^barrier: rank 0 of 2 \(gloo\): /, 'the broken group fails the next op at once');

  // Another size on one rank: every rank fails before any data moves, naming the other's size.
  rs = await runRanks('failure.js', 3, ['mismatch', '3000']);
  for (const r of rs) {
    e = r.json.find((j) => 'error' in j);
    t.equal(e?.code, 'DistError', `rank ${r.rank}: ${r.stdout}${r.stderr}`);
    t.equal(r.code, 0, `rank ${r.rank} did not crash`);
  }
  t.match(rs[0].json.find((j) => 'error' in j).error, /rank 2 called allReduce of 1000 float32 elements \(sum\) while this rank called allReduce of 10 float32 elements/);

  // A rank that never arrives: the timeout.
  rs = await runRanks('failure.js', 2, ['silent', '2000']);
  e = rs[0].json.find((j) => 'error' in j);
  t.equal(e?.code, 'DistError', rs[0].stdout + rs[0].stderr);
  t.match(e?.error, /allReduce: rank 0 of 2 \(gloo\): .*(Timed out|timed out)/i);
  t.ok(e?.ms >= 1900 && e?.ms < 6000, `after about the timeout (${e?.ms} ms)`);
});

t.test('a DDP backward that throws on one rank midway: that wrapper refuses further use, the others fail fast', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const rs = await runRanks('failure.js', 2, ['ddp-abort', '20000']);
  const refused = rs[0].json.find((j) => 'refused' in j);
  t.match(refused?.refused, /a backward failed after [1-9]\d* of \d+ gradient buckets had started their all-reduce; the ranks' collectives may no longer line up/, rs[0].stdout + rs[0].stderr);
  const e = rs[1].json.find((j) => 'error' in j);
  t.equal(e?.code, 'DistError', rs[1].stdout + rs[1].stderr);
  t.ok(e?.ms < 10_000, `rank 1 fails when rank 0 destroys its group, not at the 20 s timeout (${e?.ms} ms)`);
});

t.test('an unreachable master is a DistError naming the address', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const port = await freePort();
  const t0 = Date.now();
  await t.rejects(dist.initProcessGroup({ rank: 1, worldSize: 2, masterAddr: '127.0.0.1', masterPort: port, timeoutMs: 1000 }),
    { name: 'DistError', message: new RegExp(`initProcessGroup: rank 1 of 2: cannot meet the other ranks at 127\\.0\\.0\\.1:${port} \\(MASTER_ADDR:MASTER_PORT\\)`) });
  t.ok(Date.now() - t0 < 5000, 'within the timeout');
  t.notOk(dist.isInitialized());
});

t.test('a world of one in this process; argument errors', { skip: !gloo && 'built without Gloo' }, async (t) => {
  t.throws(() => dist.allReduce(kiln.ones([2])), DistError, 'not initialized');
  t.equal(dist.rank(), 0);
  t.equal(dist.worldSize(), 1);
  const g = await dist.initProcessGroup({ rank: 0, worldSize: 1, masterAddr: '127.0.0.1', masterPort: await freePort(), timeoutMs: 10000 });
  t.teardown(() => dist.destroyProcessGroup());
  await t.rejects(dist.initProcessGroup({ rank: 0, worldSize: 1 }), DistError, 'twice');
  t.equal(g.size, 1);
  const x = kiln.tensor([1, 2, 3], { dtype: 'float32' });
  await dist.allReduce(x, { op: 'avg' });
  t.same(Array.from(x.dataSync()), [1, 2, 3]);
  t.same(await g.allGatherObject({ a: [1, 'b'] }), [{ a: [1, 'b'] }]);
  t.throws(() => dist.allReduce(kiln.ones([2, 3]).transpose(0, 1)), { name: 'ValueError', message: /must be contiguous/ });
  t.throws(() => dist.allReduce(kiln.tensor([true, false])), { name: 'DTypeError', message: /bool tensors cannot be reduced/ });
  t.throws(() => dist.allReduce(kiln.tensor([1, 2]), { op: 'avg' }), { name: 'DTypeError', message: /avg needs a floating point tensor, got int64/ });
  t.throws(() => dist.allReduce(x, { op: 'prod' as never }), ValueError);
  t.throws(() => dist.broadcast(x, 3), { name: 'ValueError', message: /src 3 is not a member of the group/ });
  t.throws(() => g.broadcast(x, -1), ValueError);
  t.throws(() => dist.allGather([kiln.zeros([3]), kiln.zeros([3])], x), { name: 'ValueError', message: /list of 1 tensors/ });
  t.throws(() => dist.allGather(kiln.zeros([4]), x), { name: 'ShapeError', message: /output has 4 elements, expected 1 x 3/ });
  t.throws(() => dist.allGather(kiln.zeros([3], { dtype: 'float64' }), x), DTypeError);
  t.throws(() => dist.send(x, 0), { name: 'ValueError', message: /cannot send to or from its own rank/ });
  t.throws(() => dist.send(x, 0, { tag: -1 }), ValueError);
  const d = kiln.ones([1]);
  d.dispose();
  t.throws(() => dist.allReduce(d), { name: 'DistError', message: /disposed/ });
  t.same(await dist.newGroup([0]).then((s) => s?.size), 1);
  await t.rejects(dist.newGroup([0, 0]), ValueError);
  await t.rejects(dist.newGroup([1]), { name: 'ValueError', message: /rank 1 is not a world rank/ });
  await dist.barrier();
  dist.destroyProcessGroup();
  t.throws(() => g.allReduce(x), { name: 'DistError', message: /destroyed/ });
  t.notOk(dist.isInitialized());
});
