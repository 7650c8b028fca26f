// Pipeline parallelism on the CPU (issue #12): a GPT (--layers blocks of width --embd, --heads heads,
// vocabulary --vocab, context --seq) trained with AdamW on a global batch of --batch sequences,
//   - in one process (forward and backward of the whole batch at once), and
//   - split into P stages (P processes over Gloo on this machine, one thread each) with M
//     micro-batches, for each P in --stages, M in --micro and both schedules (GPipe, 1F1B).
// Per configuration: the step time (forward, backward and optimizer step; the median over --steps
// steps after --warmup, the slowest rank's), its ratio to the one-process step, each stage's measured
// idle share (time waiting for neighbors / step time, the mean over stages) against the analytic
// bubble (P-1)/(M+P-1), and the bytes sent per step (all stages together) against the analytic
// volume: an activation of B/M x T x E elements crosses each of the P-1 boundaries forward and its
// gradient backward, per micro-batch: 2 (P-1) B T E x 4 bytes, plus the tied embedding's gradient
// (V x E) exchanged once each way between the first and the last stage: 2 V E x 4 bytes.
// Every process runs with OMP_NUM_THREADS=1 (and the one-process run too), so P stages can use P
// cores; on a machine with fewer free cores than P the stages share them and the times say so.
// Prints a table and writes bench/results/pipeline.json.
//   node bench/pipeline.mjs [--stages 2,4] [--micro 4,8] [--layers 8] [--embd 128] [--heads 4]
//                           [--vocab 256] [--seq 64] [--batch 16] [--steps 8] [--warmup 2] [--timeout 300]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as kiln from '../dist/index.mjs';
import { median, spawnJob } from './jobs.mjs';

const spec = { layers: 8, embd: 128, heads: 4, vocab: 256, seq: 64, batch: 16, steps: 8, warmup: 2, timeout: 300 };
const { values } = parseArgs({
  options: {
    ...Object.fromEntries(Object.keys(spec).map((k) => [k, { type: 'string' }])),
    stages: { type: 'string' }, micro: { type: 'string' }, worker: { type: 'string' },
  },
});
const a = Object.fromEntries(Object.entries(spec).map(([k, d]) => [k, values[k] === undefined ? d : Number(values[k])]));
for (const [k, v] of Object.entries(a)) {
  if (!Number.isInteger(v) || v < (k === 'warmup' ? 0 : 1)) throw new Error(`bench/pipeline: --${k} must be a positive integer, got ${values[k]}`);
}
const list = (s, d) => (s ?? d).split(',').map(Number);
const stagesList = list(values.stages, '2,4');
const microList = list(values.micro, '4,8');
const config = { vocabSize: a.vocab, blockSize: a.seq, nLayer: a.layers, nHead: a.heads, nEmbd: a.embd };
const here = path.dirname(fileURLToPath(import.meta.url));

/** The batch of step s, the same on every rank. */
function batch(s) {
  const rng = new kiln.data.Rng(17, s);
  const ids = Int32Array.from({ length: a.batch * (a.seq + 1) }, () => Math.floor(rng.next() * a.vocab));
  return kiln.tidy(() => {
    const t = kiln.tensor(ids, { shape: [a.batch, a.seq + 1], dtype: 'int64' });
    return [t.narrow(1, 0, a.seq).contiguous(), t.narrow(1, 1, a.seq).contiguous()];
  });
}

// ---- a worker: one rank of a pipeline run, or the one-process run ----
async function worker(job) {
  kiln.manualSeed(0);
  const model = new kiln.nn.GPT(config);
  let pipe = null;
  if (job.stages) {
    await kiln.dist.initProcessGroup({ backend: 'gloo', timeoutMs: a.timeout * 1000 });
    pipe = kiln.dist.pipeline(model, { microBatches: job.micro, schedule: job.schedule });
  }
  const opt = new kiln.optim.AdamW(pipe ? pipe.parameters() : model.parameters(), { lr: 1e-4 });
  const times = [], idle = [], sent = [];
  for (let s = 0; s < a.warmup + a.steps; s++) {
    const [x, y] = batch(s);
    const t0 = performance.now();
    let r = null;
    if (pipe) r = await pipe.step(x, y);
    else model.forward(x, y).loss.backward();
    opt.step();
    opt.zeroGrad();
    const ms = performance.now() - t0;
    x.dispose();
    y.dispose();
    if (s < a.warmup) continue;
    times.push(ms);
    if (r) {
      idle.push(r.measuredBubble);
      sent.push(r.bytesSent);
    }
  }
  console.log(JSON.stringify({ rank: pipe?.stage ?? 0, stepMs: median(times), bubble: idle.length ? idle.reduce((p, q) => p + q) / idle.length : 0, bytes: sent[0] ?? null }));
  if (pipe) kiln.dist.destroyProcessGroup();
}

if (values.worker) {
  await worker(JSON.parse(values.worker));
  process.exit(0);
}

// ---- the driver ----
/** Runs the job on `world` processes; resolves with each rank's last JSON line. */
async function run(job, world) {
  const args = [fileURLToPath(import.meta.url), ...process.argv.slice(2), '--worker', JSON.stringify(job)];
  const done = await spawnJob(process.execPath, args, world, { timeoutSec: a.timeout });
  for (const r of done) {
    if (r.code !== 0) throw new Error(`bench/pipeline: ${JSON.stringify(job)} rank ${r.rank} ${r.signal ? `killed by ${r.signal}` : `exited with ${r.code}`}:\n${r.stderr}`);
  }
  return done.map((r) => JSON.parse(r.stdout.trim().split('\n').pop()));
}

const E = a.embd, T = a.seq, B = a.batch, V = a.vocab;
const t0 = performance.now();
const [single] = await run({}, 1);
console.log(`one process: ${single.stepMs.toFixed(1)} ms/step`);
const rows = [];
for (const P of stagesList) {
  for (const M of microList) {
    if (B % M !== 0) throw new Error(`bench/pipeline: --micro ${M} does not divide --batch ${B}`);
    for (const schedule of ['gpipe', '1f1b']) {
      const out = await run({ stages: P, micro: M, schedule }, P);
      const sum = (k) => out.reduce((n, r) => n + r.bytes[k], 0);
      const row = {
        stages: P, microBatches: M, schedule,
        stepMs: Math.max(...out.map((r) => r.stepMs)),
        vsOneProcess: Math.max(...out.map((r) => r.stepMs)) / single.stepMs,
        bubbleAnalytic: (P - 1) / (M + P - 1),
        bubbleMeasured: out.reduce((n, r) => n + r.bubble, 0) / P,
        p2pBytes: sum('activations') + sum('gradients'),
        p2pBytesAnalytic: 2 * (P - 1) * B * T * E * 4,
        tieBytes: sum('ties'),
        tieBytesAnalytic: 2 * V * E * 4,
        headerBytes: sum('headers'),
      };
      rows.push(row);
      console.log(`P=${P} M=${M} ${schedule}: ${row.stepMs.toFixed(1)} ms/step (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    }
  }
}

const cores = os.cpus().length;
console.log(`\nGPT ${a.layers} blocks x ${E} wide, ${a.heads} heads, vocabulary ${V}, batch ${B} x ${T} tokens, AdamW; ${cores} cores, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(`one process: ${single.stepMs.toFixed(1)} ms/step\n`);
const head = ['P', 'M', 'schedule', 'ms/step', 'x 1-proc', 'bubble (P-1)/(M+P-1)', 'idle measured', 'p2p MB/step', 'analytic MB', 'tie MB', 'analytic tie MB'];
const fmt = (r) => [r.stages, r.microBatches, r.schedule, r.stepMs.toFixed(1), r.vsOneProcess.toFixed(2), r.bubbleAnalytic.toFixed(3), r.bubbleMeasured.toFixed(3),
  (r.p2pBytes / 1e6).toFixed(3), (r.p2pBytesAnalytic / 1e6).toFixed(3), (r.tieBytes / 1e6).toFixed(3), (r.tieBytesAnalytic / 1e6).toFixed(3)].map(String);
const table = [head, ...rows.map(fmt)];
const widths = head.map((_, i) => Math.max(...table.map((r) => r[i].length)));
for (const r of table) console.log(r.map((c, i) => c.padStart(widths[i])).join('  '));
fs.mkdirSync(path.join(here, 'results'), { recursive: true });
fs.writeFileSync(path.join(here, 'results', 'pipeline.json'), JSON.stringify({ args: a, cores, loadavg: os.loadavg(), single, rows }, null, 2));
