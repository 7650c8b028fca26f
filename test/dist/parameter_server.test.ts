// The parameter server: synchronous mode equals SGD on the concatenated batch (2 servers x 2
// workers in float64: max abs difference under 1e-12; 1 server x 3 workers in float32: under 1e-6);
// a worker slower than workerTimeoutMs (but within it of the other's push) is not dropped; workers
// that start late and pause longer than workerTimeoutMs are served on, and after serve() each
// server's model holds its trained shard; a synchronous step goes on without a killed worker after
// the timeout and the restarted worker rejoins; asynchronous training lowers the loss with a worker
// killed mid-run and restarted; in one process, the staleness bound (a gradient one version old is
// rejected at maxStaleness 0, applied at 1) with a garbage message and a slot never written in the
// queue, a worker of another dtype, and the errors for bad options.
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

/** The parameters of ps_train.js's model in a saved file, flattened in the model's order. */
function flat(file: string): Float64Array {
  const x = kiln.io.loadSafetensors(file).tensors;
  return Float64Array.from(['0.weight', '0.bias', '2.weight', '2.bias'].flatMap((k) => [...x.get(k)!.to('float64').dataSync()]));
}

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

/** Trains ps_train.js's model on the whole global batches of base in one process; the saved file. */
function reference(t: Test, name: string, base: object): string {
  const out = path.join(dir, `plain-${name}`);
  const p = spawnSync(process.execPath, [WORKER, JSON.stringify({ ...base, plain: true, out })], { encoding: 'utf8' });
  t.equal(p.status, 0, p.stderr);
  return out;
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
    const ref = reference(t, dtype, base);
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

t.test('synchronous: a worker slower than workerTimeoutMs is not dropped while it is within it of the first push', async (t) => {
  // Each step worker 2 pushes 1.6 s after the last step (silent longer than the timeout), worker 1 at 1 s.
  const base = { workers: 2, steps: 3, lr: 0.1, dtype: 'float64' };
  const ref = reference(t, 'slow', base);
  const out = path.join(dir, 'slow');
  const port = await freePort();
  const cfg = { ...base, mode: 'sync', servers: 1, workerTimeoutMs: 1200, computeMs: { 1: 1000, 2: 1600 }, out };
  const rs = await Promise.all([0, 1, 2].map((r) => start(r, 3, port, cfg).done));
  rs.forEach((r) => exitsZero(t, r, `rank ${r.rank}`));
  const { report } = rs[0].json[0];
  t.equal(report.dropped, 0, 'no worker dropped');
  t.ok([1, 2].every((w) => report.workers[w].applied === 3), "both workers' 3 gradients applied");
  for (const w of [1, 2]) {
    const d = maxDiff(ref, `${out}.${w}`);
    t.ok(d < 1e-12, `worker ${w}'s parameters equal SGD on the concatenated batch: max abs difference ${d.toExponential(2)}`);
  }
});

t.test('synchronous: workers that start late and pause longer than workerTimeoutMs are served on; the servers keep the trained model', async (t) => {
  const base = { workers: 2, steps: 4, lr: 0.1, dtype: 'float64' };
  const ref = reference(t, 'pause', base);
  const out = path.join(dir, 'pause');
  const port = await freePort();
  const cfg = { ...base, mode: 'sync', servers: 2, workerTimeoutMs: 1000, startDelayMs: 1500, pause: { step: 1, ms: 2000 }, out };
  const rs = await Promise.all([0, 1, 2, 3].map((r) => start(r, 4, port, cfg).done));
  rs.forEach((r) => exitsZero(t, r, `rank ${r.rank}`));
  const trained = flat(`${out}.2`);
  const d = maxDiff(ref, `${out}.2`);
  t.ok(d < 1e-12, `the workers trained as SGD on the concatenated batch: max abs difference ${d.toExponential(2)}`);
  t.same(flat(`${out}.3`), trained, 'both workers pulled the same parameters');
  for (const s of [0, 1]) {
    const { report } = rs[s].json[0];
    t.equal(report.version, 4, `server ${s} took 4 steps`);
    t.equal(report.dropped, 0, `server ${s} dropped no worker`);
    t.ok([2, 3].every((w) => report.workers[w].applied === 4 && report.workers[w].state === 'left'), `server ${s}: every gradient applied, every worker left`);
    // Server s's model holds its shard trained (97 parameters: 0..48 and 48..97).
    const [from, to] = s === 0 ? [0, 48] : [48, 97];
    t.same(flat(`${out}.${s}`).subarray(from, to), trained.subarray(from, to), `server ${s}'s model holds the trained values of its shard after serve()`);
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

t.test('in one process: the staleness bound with bad messages in the queue, a worker of another dtype, and bad options', async (t) => {
  const model = () => {
    kiln.manualSeed(1);
    return new nn.Linear(3, 1);
  };
  for (const maxStaleness of [0, 1]) {
    const port = await freePort();
    const base = { optimizer: optim.SGD, lr: 0.1, mode: 'async' as const, maxStaleness, worldSize: 3, masterAddr: '127.0.0.1', masterPort: port, workerTimeoutMs: 5000 };
    const server = await dist.ParameterServer.create(model(), { ...base, rank: 0 });
    const served = server.serve();
    // Ahead of the workers, a garbage message, one whose header runs past its end, and a slot taken
    // but never written (its writer died): serving goes on, and not after a wait of workerTimeoutMs.
    const began = Date.now();
    const raw = await dist.TCPStore.create({ host: '127.0.0.1', port, isServer: false });
    raw.set(`ps/q/${raw.add('ps/next', 1)}`, new Uint8Array([1, 2, 3]));
    raw.set(`ps/q/${raw.add('ps/next', 1)}`, new Uint8Array([255, 255, 0, 0, 1, 2, 3, 4]));
    raw.add('ps/next', 1);
    raw.close();
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
    t.ok(Date.now() - began < base.workerTimeoutMs, `the slot never written held nothing up (${Date.now() - began} ms)`);
    await a.close();
    await b.close();
    const report = await served;
    t.equal(report.workers[2].rejected, maxStaleness >= 1 ? 0 : 1);
  }
  {
    const port = await freePort();
    const base = { optimizer: optim.SGD, lr: 0.1, worldSize: 2, masterAddr: '127.0.0.1', masterPort: port };
    const server = await dist.ParameterServer.create(model().to('float64'), { ...base, rank: 0 });
    const served = server.serve();
    const worker = await dist.ParameterServer.create(model(), { ...base, rank: 1 });
    await t.rejects(worker.pull(), { name: 'ValueError', message: /server 0's parameters are float64, this worker's float32: every rank must build the model in one dtype/ });
    await worker.close();
    t.equal((await served).workers[1].state, 'left', 'the server ends once the worker of another dtype has closed');
  }
  const ok = { optimizer: optim.SGD, lr: 0.1, worldSize: 2, rank: 0, masterAddr: '127.0.0.1', masterPort: 1 };
  await t.rejects(dist.ParameterServer.create(model(), { ...ok, servers: 2 }), { name: 'ValueError', message: /servers must be an integer in \[1, 1\] \(world of 2: at least one worker\), got 2/ });
  await t.rejects(dist.ParameterServer.create(model(), { ...ok, mode: 'eventual' as any }), { name: 'ValueError', message: /mode must be 'sync' or 'async'/ });
  await t.rejects(dist.ParameterServer.create(model().to('float16'), ok), { name: 'ValueError', message: /every parameter must be float32, or every one float64; got float16/ });
  await t.rejects(dist.ParameterServer.create(model(), { ...ok, idleTimeoutMs: 0 }), { name: 'ValueError', message: /idleTimeoutMs must be a positive integer, got 0/ });
  await t.rejects(dist.ParameterServer.create(new nn.Linear(4096, 2049).to('float64'), ok), { name: 'ValueError', message: /does not fit in one store value \(64 MiB, 8388096 elements\); use at least 2 servers/ });
  await t.rejects(dist.ParameterServer.create(model(), { ...ok, optimizer: undefined as any }), { name: 'ValueError', message: /options.optimizer must be an optimizer class/ });
});
