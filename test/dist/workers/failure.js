// Collectives that cannot finish, for test/dist/process_group.test.ts. argv[2]:
//   peer-exits: the last rank exits after joining; the others all-reduce and report the DistError;
//   mismatch:   the last rank all-reduces a tensor of another size than the others;
//   silent:     the last rank joins and then never calls the collective.
// Each surviving rank prints {rank, error, code, ms} (ms: from the collective's start to its failure).
const kiln = require('../../../dist');
const { dist } = kiln;
const mode = process.argv[2];

(async () => {
  await dist.initProcessGroup({ backend: 'gloo', timeoutMs: Number(process.argv[3] ?? 3000) });
  const r = dist.rank(), last = dist.worldSize() - 1;
  if (mode === 'peer-exits' && r === last) process.exit(0);
  if (mode === 'silent' && r === last) {
    await new Promise((res) => setTimeout(res, 8000));
    process.exit(0);
  }
  const t = kiln.ones([mode === 'mismatch' && r === last ? 1000 : 10]);
  const t0 = Date.now();
  try {
    await dist.allReduce(t);
    console.log(JSON.stringify({ rank: r, error: null }));
  } catch (e) {
    console.log(JSON.stringify({ rank: r, error: e.message, code: e.code, ms: Date.now() - t0 }));
    // The group is broken now: the next op fails at once with the same error.
    const t1 = Date.now();
    try {
      await dist.barrier();
    } catch (e2) {
      console.log(JSON.stringify({ rank: r, again: e2.message, code: e2.code, ms: Date.now() - t1 }));
    }
  }
  process.exit(0);
})().catch((e) => {
  console.log(JSON.stringify({ rank: dist.rank(), setup: `${e.name}: ${e.message}` }));
  process.exit(1);
});
