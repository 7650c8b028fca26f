// A worker killed mid-run, for test/dist/launch_failure.test.ts under `kiln launch`: the ranks
// all-reduce in a loop; the last rank kills itself with SIGKILL after a few steps. The others ignore
// the launcher's SIGTERM long enough to report the DistError their next collective ends with.
const kiln = require('../../../dist');
const { dist } = kiln;
process.on('SIGTERM', () => {});

(async () => {
  await dist.initProcessGroup({ backend: 'gloo', timeoutMs: 5000 });
  const r = dist.rank(), last = dist.worldSize() - 1;
  const t = kiln.ones([1000]);
  for (let step = 0; ; step++) {
    if (r === last && step === 3) process.kill(process.pid, 'SIGKILL');
    const t0 = Date.now();
    try {
      await dist.allReduce(t);
    } catch (e) {
      console.log(JSON.stringify({ rank: r, step, code: e.code, error: e.message, ms: Date.now() - t0 }));
      process.exit(3);
    }
  }
})();
