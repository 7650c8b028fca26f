// `kiln launch` when a worker is killed mid-run: the other workers' collectives end in a DistError
// inside the timeout, and the launcher exits non-zero naming the killed rank.
import t from 'tap';
import * as path from 'path';
import { spawnSync } from 'child_process';
import * as kiln from '../../lib';
import { freePort, WORKERS } from './helpers';

const main = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');

t.test('a killed worker: DistError on the others, the launcher names the rank', { skip: !kiln.dist.isBackendAvailable('gloo') && 'built without Gloo' }, async (t) => {
  const port = await freePort();
  const t0 = Date.now();
  const env = { ...process.env, OMP_NUM_THREADS: '1' };
  delete env.CUDA_VISIBLE_DEVICES;
  const r = spawnSync(process.execPath, [main, 'launch', '--nproc-per-node', '3', '--master-port', String(port), '--no-gpu-binding', path.join(WORKERS, 'killed.js')], {
    encoding: 'utf8', timeout: 60_000, env,
  });
  const out = r.stdout + r.stderr;
  t.equal(r.status, 1, `the launcher exits 1\n${out}`);
  t.match(r.stderr, /kiln launch: rank 2 \(local rank 2\) was killed by SIGKILL/, 'the launcher names the killed rank');
  for (const rank of [0, 1]) {
    const line = out.split('\n').find((l) => l.startsWith(`[rank ${rank}] {`));
    const j = line ? JSON.parse(line.slice(`[rank ${rank}] `.length)) : null;
    t.equal(j?.code, 'DistError', `rank ${rank} got a DistError: ${line}`);
    t.match(j?.error, new RegExp(`^allReduce: rank ${rank} of 3 \\(gloo\\): `));
    t.ok(j?.ms < 5000, `inside the 5 s timeout (${j?.ms} ms)`);
  }
  t.ok(Date.now() - t0 < 30_000);
});
