// Tensor-parallel GPT training on the CPU (issue #12): the step time of a GPT split across N
// processes (dist.tp, Gloo, one thread each) against the same model in one process at the same
// global batch, and the bytes each step moves through the groups against the analytic figure.
//   Layouts (--layouts, default 1,2): "1" one process (the plain nn.GPT, no group); "N" N-way tensor
//   parallel (every rank runs the whole batch on its shards); "NxM" N-way TP x M-way data parallel
//   (DDP over the data-parallel groups, each taking batch / M rows).
//   A step is forward, backward, (DDP synchronize,) AdamW step and zeroing the gradients; its time is
//   the slowest rank's, the median over --steps steps after --warmup. speedup = one process's step
//   time / the layout's.
//   Bytes per step: ProcessGroup.commStats() of the TP group (and the DP group) over the timed steps.
//   Analytic TP figure, per step: per block 2 all-reduces of B*T*E values forward (attention out,
//   MLP proj) and 2 backward (their column-parallel inputs), one each way for the vocabulary-parallel
//   embedding and output head, and 3 of B*T in the cross-entropy: ((4 L + 2) B T E + 3 B T) x 4 bytes.
//   Analytic DP figure: one all-reduce of this rank's gradients, numParameters x 4 bytes.
// Each of --rounds rounds runs every layout once, in an order that alternates, so that load from other
// processes hits all alike; figures are medians over the rounds. Prints a table and writes
// bench/results/tp.json.
//   node bench/tp.mjs [--layouts 1,2,2x2] [--rounds 3] [--steps 10] [--warmup 2] [--batch 8] [--block 64]
//                     [--layers 2] [--embd 256] [--heads 8] [--vocab 1024] [--timeout 300]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as kiln from '../dist/index.mjs';
import { median, spawnJob } from './jobs.mjs';

const spec = { rounds: 3, steps: 10, warmup: 2, batch: 8, block: 64, layers: 2, embd: 256, heads: 8, vocab: 1024, timeout: 300 };
const { values } = parseArgs({
  options: { ...Object.fromEntries(Object.keys(spec).map((k) => [k, { type: 'string' }])), layouts: { type: 'string' }, worker: { type: 'string' } },
});
const a = Object.fromEntries(Object.entries(spec).map(([k, d]) => [k, values[k] === undefined ? d : Number(values[k])]));
for (const [k, v] of Object.entries(a)) {
  if (!Number.isInteger(v) || v < (k === 'warmup' ? 0 : 1)) throw new Error(`bench/tp: --${k} must be a positive integer, got ${values[k]}`);
}
const config = { vocabSize: a.vocab, blockSize: a.block, nLayer: a.layers, nHead: a.heads, nEmbd: a.embd };

/** One rank of a layout: prints rank 0's JSON record. */
async function worker(layout) {
  const { nn, optim, dist } = kiln;
  const [tpSize, dpSize] = layout.split('x').map(Number).concat([1]);
  const world = tpSize * dpSize;
  let groups = null;
  if (world > 1) {
    await dist.initProcessGroup({ backend: 'gloo', timeoutMs: a.timeout * 1000 });
    groups = await dist.tp.newGroups(tpSize);
  }
  kiln.manualSeed(0);
  const plain = new nn.GPT(config);
  let model = plain, trained = plain;
  if (groups) {
    model = trained = dist.tp.parallelize(plain, groups.tp);
    plain.dispose();
    if (groups.dp) {
      trained = new dist.DistributedDataParallel(model, { group: groups.dp });
      await trained.ready;
    }
  }
  const opt = new optim.AdamW(trained.parameters(), { lr: 1e-4 });
  const rows = a.batch / dpSize;
  const x = kiln.randint(0, a.vocab, [rows, a.block], { dtype: 'int64' }), y = kiln.randint(0, a.vocab, [rows, a.block], { dtype: 'int64' });
  const times = [];
  for (let s = 0; s < a.warmup + a.steps; s++) {
    if (s === a.warmup && groups) {
      groups.tp.resetCommStats();
      groups.dp?.resetCommStats();
    }
    if (groups) await dist.barrier();
    const t0 = performance.now();
    kiln.tidy(() => trained.forward(x, y).loss.backward());
    if (groups?.dp) await trained.synchronize();
    opt.step();
    opt.zeroGrad();
    let dt = (performance.now() - t0) / 1000;
    if (groups) {
      const t = kiln.tensor([dt], { dtype: 'float64' });
      await dist.allReduce(t, { op: 'max' });
      dt = t.item();
      t.dispose();
    }
    if (s >= a.warmup) times.push(dt);
  }
  const perStep = (g) => Object.values(g.commStats()).reduce((n, c) => n + c.bytes, 0) / a.steps;
  const record = {
    layout, processes: world, step_s: median(times), parameters_per_rank: model.numParameters(),
    tp_bytes: groups ? perStep(groups.tp) : 0,
    tp_bytes_analytic: tpSize > 1 ? ((4 * a.layers + 2) * rows * a.block * a.embd + 3 * rows * a.block) * 4 : 0,
    dp_bytes: groups?.dp ? perStep(groups.dp) : 0,
    dp_bytes_analytic: dpSize > 1 ? model.numParameters() * 4 : 0,
  };
  if (!groups || dist.rank() === 0) console.log(JSON.stringify(record));
  if (groups) dist.destroyProcessGroup();
}

/** Runs one layout's ranks (this script with --worker); resolves with rank 0's record. */
async function runLayout(layout, args) {
  const world = layout.split('x').map(Number).reduce((p, q) => p * q, 1);
  const command = [fileURLToPath(import.meta.url), ...args, '--worker', layout];
  const done = await spawnJob(process.execPath, command, world, { timeoutSec: a.timeout });
  const bad = done.filter((r) => r.code !== 0);
  if (bad.length) throw new Error(`bench/tp: layout ${layout} failed\n${bad.map((r) => `rank ${r.rank} ${r.signal ?? `exited with ${r.code}`}:\n${r.stderr.trim()}`).join('\n')}`);
  return JSON.parse(done[0].stdout.split('\n').find((l) => l.startsWith('{')));
}

if (values.worker) {
  await worker(values.worker);
} else {
  const layouts = (values.layouts ?? '1,2').split(',');
  for (const l of layouts) {
    const [t, d = 1] = l.split('x').map(Number);
    if (!(t >= 1 && d >= 1) || a.batch % d || a.vocab % t || a.heads % t) throw new Error(`bench/tp: layout ${l} does not fit --batch ${a.batch}, --vocab ${a.vocab}, --heads ${a.heads}`);
  }
  if (!layouts.includes('1')) layouts.unshift('1');
  const args = Object.keys(spec).flatMap((k) => [`--${k}`, String(a[k])]);
  const loadavg = os.loadavg();
  const rounds = [];
  for (let r = 0; r < a.rounds; r++) {
    const order = r % 2 ? [...layouts].reverse() : layouts;
    const round = {};
    for (const l of order) round[l] = await runLayout(l, args);
    rounds.push(round);
    console.log(`round ${r + 1}/${a.rounds}: ${layouts.map((l) => `${l} ${(round[l].step_s * 1000).toFixed(1)} ms`).join(', ')}`);
  }
  const single = median(rounds.map((rd) => rd['1'].step_s));
  const rows = layouts.map((l) => {
    const last = rounds[rounds.length - 1][l];
    const step = median(rounds.map((rd) => rd[l].step_s));
    return { ...last, step_s: step, speedup: single / step, step_s_rounds: rounds.map((rd) => rd[l].step_s) };
  });
  console.log(`\nGPT ${JSON.stringify(config)}, global batch ${a.batch} x ${a.block} tokens, float32, Gloo, 1 thread per process; ` +
    `${os.cpus().length} CPUs, load average ${loadavg.map((v) => v.toFixed(1)).join(' ')} at the start`);
  console.log('layout  procs  params/rank  step ms  speedup  TP bytes/step (analytic)   DP bytes/step (analytic)');
  for (const r of rows) {
    console.log(`${r.layout.padEnd(6)}  ${String(r.processes).padStart(5)}  ${String(r.parameters_per_rank).padStart(11)}  ${(r.step_s * 1000).toFixed(1).padStart(7)}  ` +
      `${r.speedup.toFixed(2).padStart(7)}  ${`${r.tp_bytes} (${r.tp_bytes_analytic})`.padStart(24)}  ${`${r.dp_bytes} (${r.dp_bytes_analytic})`.padStart(24)}`);
  }
  const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'tp.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify({ config, batch: a.batch, steps: a.steps, rounds: a.rounds, loadavg, cpus: os.cpus().length, layouts: rows }, null, 2)}\n`);
  console.log(`wrote ${out}`);
}
