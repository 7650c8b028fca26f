// Collectives that cannot finish, for test/dist/process_group.test.ts. argv[2]:
//   peer-exits: the last rank exits after joining; the others all-reduce and report the DistError;
//   mismatch:   the last rank all-reduces a tensor of another size than the others;
//   silent:     the last rank joins and then never calls the collective;
//   ddp-abort:  rank 0's backward throws after some DDP buckets started their all-reduce: its wrapper
//               refuses further use ({rank, refused}); it destroys its group, so the other ranks'
//               all-reduce of the buckets rank 0 never launched fails at once.
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
  if (mode === 'ddp-abort') return ddpAbort(r);
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
})().catch(report);

async function ddpAbort(r) {
  const { nn } = kiln;
  const model = new nn.Sequential(new nn.Linear(4, 8), new nn.Tanh(), new nn.Linear(8, 8), new nn.Tanh(), new nn.Linear(8, 2));
  const ddp = new dist.DistributedDataParallel(model, { bucketCapMB: 64 / 2 ** 20 });
  await ddp.ready;
  // The first layer's gradient arrives last: by then the later layers' buckets are all-reducing.
  if (r === 0) model.at(0).weight.registerHook(() => { throw new Error('hook failed'); });
  const t0 = Date.now();
  try {
    ddp.forward(kiln.ones([3, 4])).sum().backward();
    await ddp.synchronize();
    console.log(JSON.stringify({ rank: r, error: null }));
  } catch (e) {
    if (r === 0) {
      try {
        ddp.forward(kiln.ones([3, 4]));
      } catch (e2) {
        console.log(JSON.stringify({ rank: r, refused: e2.message }));
      }
      dist.destroyProcessGroup();
    } else {
      console.log(JSON.stringify({ rank: r, error: e.message, code: e.code, ms: Date.now() - t0 }));
    }
  }
  process.exit(0);
}

function report(e) {
  console.log(JSON.stringify({ rank: dist.rank(), setup: `${e.name}: ${e.message}` }));
  process.exit(1);
}
