// The parameter server: synchronous mode equals SGD on the concatenated batch (2 servers x 2
// workers in float64: max abs difference under 1e-12; 1 server x 3 workers in float32: under 1e-6);
// a synchronous step goes on without a killed worker after the timeout and the restarted worker
// rejoins; asynchronous training lowers the loss with a worker killed mid-run and restarted; in one
// process, the staleness bound (a gradient one version old is rejected at maxStaleness 0, applied at
// 1) and the errors for bad options.
import t, { Test } from 'tap';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib';
import { freePort, RankResult, spawnRank, StartedRank } from './helpers';

const { dist, nn, optim } = kiln;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-ps-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const WORKER = path.join(__dirname, 'workers', 'ps_train.js');

function maxDiff(a: string, b: string): number {
  const x = kiln.io.loadSafetensors(a).tensors, y = kiln.io.loadSafetensors(b).tensors;
  let m = 0;
  for (const [k, v] of x) m = Math.max(m, kiln.tidy(() => v.sub(y.get(k)!).abs().max().item()));
  return m;
}

/** Starts rank `rank` of a world of `world` running ps_train.js with cfg. */
function start(rank: number, world: number, port: number, cfg: object, onLine?: (j: any) => void): StartedRank {
  return spawnRank(process.execPath, [WORKER, JSON.stringify(cfg)], rank, world, port, { timeoutMs: 120_000 }, onLine && ((l) => {
    if (l.startsWith('{')) onLine(JSON.parse(l));
  }));
}

function exitsZero(t: Test, r: RankResult, what: string): void {
  t.equal(r.code, 0, `${what} exits 0 ${r.stderr}`);
}

t.test('synchronous: equal to SGD on the concatenated batch', async (t) => {
  for (const { servers, workers, dtype, tol } of [
    { servers: 2, workers: 2, dtype: 'float64', tol: 1e-12 },
    { servers: 1, workers: 3, dtype: 'float32', tol: 1e-6 },
  ]) {
    const base = { workers, steps: 10, lr: 0.1, dtype };
    const ref = path.join(dir, `plain-${dtype}`);
    const p = spawnSync(process.execPath, [WORKER, JSON.stringify({ ...base, plain: true, out: ref })], { encoding: 'utf8' });
    t.equal(p.status, 0, p.stderr);
    const out = path.join(dir, `sync-${dtype}`);
    const port = await freePort();
    const world = servers + workers;
    const rs = await Promise.all(Array.from({ length: world }, (_, r) => start(r, world, port, { ...base, mode: 'sync', servers, out }).done));
    rs.forEach((r) => exitsZero(t, r, `rank ${r.rank}`));
    for (let w = servers; w < world; w++) {
      const d = maxDiff(ref, `${out}.${w}`);
      t.ok(d < tol, `${servers} servers x ${workers} workers, ${dtype}: worker ${w}'s parameters after 10 steps, max abs difference ${d.toExponential(2)} < ${tol}`);
    }
    for (let s = 0; s < servers; s++) {
      const { report } = rs[s].json[0];
      t.equal(report.version, 10, `server ${s} took 10 steps`);
      t.ok(Object.values(report.workers).every((w: any) => w.applied === 10 && w.state === 'left'), `server ${s}: every worker's 10 gradients applied, then it left`);
    }
  }
});

t.test('synchronous: a killed worker is dropped after the timeout; restarted, it rejoins', async (t) => {
  const port = await freePort();
  const cfg = { mode: 'sync', servers: 1, workers: 2, lr: 0.1, workerTimeoutMs: 1500, pauseMs: 25 };
  let restarted: StartedRank | null = null;
  let killedAt = -1;
  const server = start(0, 3, port, { ...cfg, steps: 40 });
  const victim = start(2, 3, port, { ...cfg, steps: 40 }, (j) => {
    if (j.step === 3) victim.child.kill('SIGKILL');
  });
  const survivor = start(1, 3, port, { ...cfg, steps: 40 }, (j) => {
    if (j.step === undefined) return;
    if (killedAt < 0 && victim.child.signalCode) killedAt = j.step;
    // Two steps taken alone (past the timeout), then the worker comes back.
    if (killedAt >= 0 && j.step === killedAt + 2 && !restarted) restarted = start(2, 3, port, { ...cfg, steps: 50, firstStep: 40 });
  });
  const [s, v, w] = await Promise.all([server.done, victim.done, survivor.done]);
  t.equal(v.signal, 'SIGKILL', 'the victim was killed');
  exitsZero(t, w, 'the surviving worker');
  exitsZero(t, s, 'the server');
  t.ok(restarted, 'the worker was restarted');
  const again = await restarted!.done;
  exitsZero(t, again, 'the restarted worker');
  const { report } = s.json[0];
  t.equal(report.dropped, 1, 'the killed worker was dropped once');
  t.equal(report.workers[2].joins, 2, 'worker 2 joined twice');
  t.ok(report.workers[2].applied >= 4 + 1, `worker 2's gradients applied before and after its restart (${report.workers[2].applied})`);
  t.equal(report.workers[1].applied, 40, 'every step of the survivor was applied');
  t.equal(report.version, 40, 'one step per round');
  const steps = w.json.filter((j) => j.step !== undefined);
  t.equal(steps.length, 40);
  t.ok(steps.every((j) => j.applied), 'the survivor never waited in vain');
  const initial = w.json.find((j) => j.initial !== undefined).initial;
  const final = w.json.find((j) => j.final !== undefined).final;
  t.ok(final < 0.5 * initial, `the loss fell: ${initial.toFixed(4)} -> ${final.toFixed(4)}`);
});

t.test('asynchronous: the loss falls with a worker killed mid-run, and the restarted worker rejoins', async (t) => {
  const port = await freePort();
  const cfg = { mode: 'async', servers: 1, workers: 3, lr: 0.05, workerTimeoutMs: 3000, maxStaleness: 4, pauseMs: 10 };
  let restarted: StartedRank | null = null;
  const server = start(0, 4, port, { ...cfg, steps: 80 });
  const victim = start(3, 4, port, { ...cfg, steps: 80 }, (j) => {
    if (j.step !== 10) return;
    victim.child.kill('SIGKILL');
    restarted = start(3, 4, port, { ...cfg, steps: 120, firstStep: 80 });
  });
  const others = [1, 2].map((r) => start(r, 4, port, { ...cfg, steps: 80 }));
  const [s, v, ...ws] = await Promise.all([server.done, victim.done, ...others.map((o) => o.done)]);
  t.equal(v.signal, 'SIGKILL', 'the victim was killed');
  ws.forEach((w) => exitsZero(t, w, `worker ${w.rank}`));
  exitsZero(t, s, 'the server');
  const again = await restarted!.done;
  exitsZero(t, again, 'the restarted worker');
  const { report } = s.json[0];
  t.equal(report.workers[3].joins, 2, 'worker 3 joined twice');
  const applied = Object.values(report.workers).reduce((n: number, w: any) => n + w.applied, 0);
  t.equal(report.version, applied, `each applied gradient is one version (${applied} applied, ${Object.values(report.workers).reduce((n: number, w: any) => n + w.rejected, 0)} rejected as too stale)`);
  t.ok(report.workers[3].applied > 10, `the restarted worker's gradients count (${report.workers[3].applied} from worker 3)`);
  // The first pull of the job got version 0: the loss of the initial parameters.
  const start0 = [v, ...ws].flatMap((r) => r.json).find((j) => j.version === 0).initial;
  for (const w of [...ws, again]) {
    const end = w.json.find((j) => j.final !== undefined);
    t.ok(end.final < 0.8 * start0, `worker ${w.rank}: the loss fell from ${start0.toFixed(4)} to ${end.final.toFixed(4)}`);
  }
  const rejoined = again.json.find((j) => j.initial !== undefined).initial;
  t.ok(rejoined < 0.8 * start0, `the restarted worker started from the trained parameters (loss ${rejoined.toFixed(4)}), not its own initialization`);
});

t.test('in one process: the staleness bound, and bad options', async (t) => {
  const model = () => {
    kiln.manualSeed(1);
    return new nn.Linear(3, 1);
  };
  for (const maxStaleness of [0, 1]) {
    const port = await freePort();
    const base = { optimizer: optim.SGD, lr: 0.1, mode: 'async' as const, maxStaleness, worldSize: 3, masterAddr: '127.0.0.1', masterPort: port, workerTimeoutMs: 5000 };
    const server = await dist.ParameterServer.create(model(), { ...base, rank: 0 });
    const served = server.serve();
    const nets = [model(), model()];
    const [a, b] = await Promise.all(nets.map((net, i) => dist.ParameterServer.create(net, { ...base, rank: i + 1 })));
    const backward = (net: kiln.nn.Linear) => net.forward(kiln.ones([2, 3])).sum().backward();
    // Both pull version 0; a's gradient makes version 1; b's was computed on version 0.
    t.same(await a.pull(), [0]);
    t.same(await b.pull(), [0]);
    backward(nets[0]);
    t.same(await a.push(), { applied: true, versions: [1] }, 'the first gradient is applied');
    backward(nets[1]);
    const r = await b.push();
    t.same(r, { applied: maxStaleness >= 1, versions: [maxStaleness >= 1 ? 2 : 1] }, `maxStaleness ${maxStaleness}: a gradient one version old is ${r.applied ? 'applied' : 'rejected'}`);
    await a.close();
    await b.close();
    const report = await served;
    t.equal(report.workers[2].rejected, maxStaleness >= 1 ? 0 : 1);
  }
  const ok = { optimizer: optim.SGD, lr: 0.1, worldSize: 2, rank: 0, masterAddr: '127.0.0.1', masterPort: 1 };
  await t.rejects(dist.ParameterServer.create(model(), { ...ok, servers: 2 }), { name: 'ValueError', message: /servers must be an integer in \[1, 1\] \(world of 2: at least one worker\), got 2/ });
  await t.rejects(dist.ParameterServer.create(model(), { ...ok, mode: 'eventual' as any }), { name: 'ValueError', message: /mode must be 'sync' or 'async'/ });
  await t.rejects(dist.ParameterServer.create(model().to('float16'), ok), { name: 'ValueError', message: /every parameter must be float32, or every one float64; got float16/ });
  await t.rejects(dist.ParameterServer.create(model(), { ...ok, optimizer: undefined as any }), { name: 'ValueError', message: /options.optimizer must be an optimizer class/ });
});
