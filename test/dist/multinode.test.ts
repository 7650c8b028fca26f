// Data parallel across two machines, for real: two Linux network namespaces joined by a veth pair,
// each holding only its loopback and its end of the pair (10.254.173.1 and .2, a /24 that exists
// nowhere else), and `kiln launch --nnodes 2 --nproc-per-node 2` run in both at once with node 0's
// veth address as MASTER_ADDR. It proves that:
// - ranks 2 and 3 on node 1 join ranks 0 and 1 on node 0 through MASTER_ADDR/MASTER_PORT;
// - each rank's Gloo device listens on an address the other node can reach (gloo_group.cc's
//   local_address_towards picks the veth address in both namespaces: with 127.0.0.1, or any other,
//   the nodes could not connect, as nothing else links the namespaces);
// - the gradients really cross the link: the veth's byte counters grow, in each direction, by at
//   least one float32 per parameter per step (each node's summed gradient depends on every gradient
//   of the other node), plus rank 0's initial parameters one way;
// - the four ranks end with the parameters of one process trained on the concatenated batches (max
//   abs difference under 1e-5, as test/dist/ddp.test.ts on one machine).
// Needs root, iproute2, network namespaces and veth; skips naming what is missing (an unprivileged
// container cannot create namespaces). The namespaces, and whatever still runs in them, are removed
// at the end, also when the test fails or the process exits early.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import * as kiln from '../../lib';
import { maxAbsDiff, trainPlain, WORKERS } from './helpers';

const main = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');
const NS = [`kiln-multinode-${process.pid}-0`, `kiln-multinode-${process.pid}-1`];
const VETH = ['kiln0', 'kiln1'];                  // the pair's ends, one in each namespace
const ADDR = ['10.254.173.1', '10.254.173.2'];
const PORT = 29500;                                // a new namespace has nothing listening
const BASE = { steps: 10, batch: 8, lr: 0.001 };
const CONFIG = { vocabSize: 11, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 16 };   // as in workers/ddp_train.js
const TIMEOUT_MS = 60_000;

function ip(...args: string[]) {
  return spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
}

// A namespace outlives its name while processes run in it: end those (all started by this test) first.
function killInside(ns: string): void {
  for (const pid of ip('netns', 'pids', ns).stdout?.split('\n').filter(Boolean).map(Number) ?? []) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

let created: string[] = [];
function removeNamespaces(): void {
  for (const ns of created) {
    killInside(ns);
    ip('netns', 'del', ns);
  }
  created = [];
}
t.teardown(removeNamespaces);
process.once('exit', removeNamespaces);

/** Creates the two nodes; returns why the test must skip, or null. */
function setUp(): string | null {
  if (!kiln.dist.isBackendAvailable('gloo')) return 'built without Gloo';
  if (process.platform !== 'linux') return 'network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces';
  if (ip('-V').error) return 'needs iproute2 (the ip command)';
  for (const ns of NS) {
    const r = ip('netns', 'add', ns);
    if (r.status !== 0) return `ip netns add fails here (${r.stderr.trim()}): no network namespaces, e.g. an unprivileged container`;
    created.push(ns);
  }
  const r = ip('-n', NS[0], 'link', 'add', VETH[0], 'type', 'veth', 'peer', 'name', VETH[1], 'netns', NS[1]);
  if (r.status !== 0) return `cannot create a veth pair (${r.stderr.trim()})`;
  for (const i of [0, 1]) {
    for (const args of [['addr', 'add', `${ADDR[i]}/24`, 'dev', VETH[i]], ['link', 'set', 'lo', 'up'], ['link', 'set', VETH[i], 'up']]) {
      const s = ip('-n', NS[i], ...args);
      if (s.status !== 0) throw new Error(`ip -n ${NS[i]} ${args.join(' ')}: ${s.stderr}`);
    }
  }
  return null;
}

/** Bytes through node i's end of the veth pair so far. */
function counters(i: number): { rx: number; tx: number } {
  const r = ip('-n', NS[i], '-j', '-s', 'link', 'show', 'dev', VETH[i]);
  const s = JSON.parse(r.stdout)[0].stats64;
  return { rx: s.rx.bytes, tx: s.tx.bytes };
}

/** Runs node i's `kiln launch` inside its namespace. */
function launchNode(i: number, cfg: object): Promise<{ code: number | null; signal: string | null; out: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: '1' };
  delete env.CUDA_VISIBLE_DEVICES;
  delete env.GLOO_SOCKET_IFNAME;   // the address is chosen from the route to MASTER_ADDR
  const args = ['launch', '--nnodes', '2', '--node-rank', String(i), '--nproc-per-node', '2', '--master-addr', ADDR[0], '--master-port', String(PORT), '--no-gpu-binding'];
  const child = spawn('ip', ['netns', 'exec', NS[i], process.execPath, main, ...args, path.join(WORKERS, 'ddp_train.js'), JSON.stringify(cfg)], { env });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const timer = setTimeout(() => killInside(NS[i]), TIMEOUT_MS);
  return new Promise((resolve) => child.on('exit', (code, signal) => {
    clearTimeout(timer);
    resolve({ code, signal, out });
  }));
}

const skip = setUp();
if (skip) removeNamespaces();

t.test('DDP on 2 nodes x 2 processes, linked by a veth pair, equals one process on the concatenated batch', { skip: skip ?? false }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-multinode-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const ref = trainPlain(path.join(dir, 'plain.safetensors'), BASE);
  const out = path.join(dir, 'ddp.safetensors');

  const before = counters(0);
  const t0 = Date.now();
  const nodes = await Promise.all([0, 1].map((i) => launchNode(i, { ...BASE, out })));
  const ms = Date.now() - t0;
  const after = counters(0);
  for (const [i, r] of nodes.entries()) {
    t.equal(r.code, 0, `node ${i}'s launcher exits 0 (${ms} ms)${r.code === 0 ? '' : `\n${r.out}`}`);
    const ranks = [...r.out.matchAll(/^\[rank (\d)\] \{"rank":\1,"losses"/gm)].map((m) => Number(m[1])).sort();
    t.same(ranks, [2 * i, 2 * i + 1], `node ${i} ran ranks ${2 * i} and ${2 * i + 1} of 4`);
  }
  if (nodes.some((r) => r.code !== 0)) return;

  const paramBytes = new kiln.nn.GPT(CONFIG).numParameters() * 4;   // float32, the tied embedding once
  const sent = after.tx - before.tx, received = after.rx - before.rx;
  t.ok(sent >= (BASE.steps + 1) * paramBytes, `node 0 -> node 1 over the veth: ${sent} bytes >= ${BASE.steps + 1} x ${paramBytes}`);
  t.ok(received >= BASE.steps * paramBytes, `node 1 -> node 0 over the veth: ${received} bytes >= ${BASE.steps} x ${paramBytes}`);

  const d = maxAbsDiff(ref, out);
  t.ok(d < 1e-5, `4 ranks on 2 nodes vs one process: max abs difference ${d.toExponential(2)} < 1e-5`);
});
