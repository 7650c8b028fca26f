// bfloat16 autocast on the CPU: the cost and the effect on the loss of running a GPT's forward under
// kiln.autocast({ dtype: 'bfloat16' }) against plain float32. The model is a small nn.GPT (default:
// vocabulary 64, context 64, 2 layers, 4 heads, 128 wide, batch 8 x 64 tokens, AdamW lr 1e-3,
// weight decay 0.1, 1 thread); a step is forward (+ loss), backward, optimizer step and zeroing the
// gradients. The data is learnable and the same for both: each sequence counts modulo the vocabulary
// from a random start by a random stride in [1, 8] (from a fixed LCG, independent of kiln's RNG), so
// the loss falls from ln(64) once the model finds the stride.
//   1. Loss: from the same initialization (manualSeed(0)) and the same batches, each precision trains
//      --steps steps (default 50); the mean loss over them, and its relative difference.
//   2. Time: both models then keep training in alternating rounds (each round --per-round steps of
//      float32, then as many under autocast), so that load from other processes hits both alike; after
//      --warmup steps each, ms per step is the median over --rounds rounds, split into forward,
//      backward (with freeing the step's tensors) and optimizer; bf16/fp32 is the median of the
//      per-round ratios.
// Prints a table and writes bench/results/autocast.json.
//   node bench/autocast.mjs [--threads 1] [--steps 50] [--rounds 12] [--per-round 3] [--warmup 3]
//                           [--batch 8] [--block 64] [--layers 2] [--embd 128] [--heads 4] [--vocab 64]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as kiln from '../dist/index.mjs';

const spec = { threads: 1, steps: 50, rounds: 12, 'per-round': 3, warmup: 3, batch: 8, block: 64, layers: 2, embd: 128, heads: 4, vocab: 64 };
const { values } = parseArgs({ options: Object.fromEntries(Object.keys(spec).map((k) => [k, { type: 'string' }])) });
const a = Object.fromEntries(Object.entries(spec).map(([k, d]) => [k, values[k] === undefined ? d : Number(values[k])]));
for (const [k, v] of Object.entries(a)) if (!Number.isInteger(v) || v < (k === 'warmup' ? 0 : 1)) throw new Error(`--${k} must be a positive integer, got ${values[k]}`);

const { nn, optim } = kiln;
kiln.setNumThreads(a.threads);
const loadavg = os.loadavg();

function median(xs) {
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
const mean = (xs) => xs.reduce((p, q) => p + q, 0) / xs.length;

// ---- data: counting sequences modulo the vocabulary ----
let seed = 12345;
const rand = (n) => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return Math.floor((seed / 4294967296) * n);
};
function makeBatch() {
  const xs = new Int32Array(a.batch * a.block), ys = new Int32Array(a.batch * a.block);
  for (let b = 0; b < a.batch; b++) {
    const start = rand(a.vocab), stride = 1 + rand(8);
    for (let t = 0; t < a.block; t++) {
      xs[b * a.block + t] = (start + stride * t) % a.vocab;
      ys[b * a.block + t] = (start + stride * (t + 1)) % a.vocab;
    }
  }
  return [kiln.tensor(xs, { shape: [a.batch, a.block], dtype: 'int64' }), kiln.tensor(ys, { shape: [a.batch, a.block], dtype: 'int64' })];
}
const batches = Array.from({ length: a.steps }, makeBatch);

// ---- the two runs ----
function makeRun(amp) {
  kiln.manualSeed(0);
  const model = new nn.GPT({ vocabSize: a.vocab, blockSize: a.block, nLayer: a.layers, nHead: a.heads, nEmbd: a.embd });
  const optimizer = new optim.AdamW(model.parameters(), { lr: 1e-3, weightDecay: 0.1 });
  let i = 0;
  // One training step on the next batch; returns the loss and the phases' seconds.
  const step = () => {
    const [x, y] = batches[i++ % batches.length];
    const t0 = performance.now();
    let t1 = 0;
    const loss = kiln.tidy(() => {
      const forward = () => model.forward(x, y).loss;
      const l = amp ? kiln.autocast({ dtype: 'bfloat16' }, forward) : forward();
      const v = l.item();
      t1 = performance.now();
      l.backward();
      return v;
    });
    const t2 = performance.now();
    optimizer.step();
    optimizer.zeroGrad();
    const t3 = performance.now();
    return { loss, forward: t1 - t0, backward: t2 - t1, optimizer: t3 - t2, total: t3 - t0 };
  };
  return { name: amp ? 'bfloat16 autocast' : 'float32', model, step, losses: [], times: [] };
}
const runs = [makeRun(false), makeRun(true)];

// 1. Loss over the first steps, same initialization and batches.
for (const r of runs) for (let s = 0; s < a.steps; s++) r.losses.push(r.step().loss);

// 2. Timing in alternating rounds (the loss phase above was their warm-up too).
for (const r of runs) for (let s = 0; s < a.warmup; s++) r.step();
const roundRatios = [];
for (let round = 0; round < a.rounds; round++) {
  const perRound = runs.map((r) => {
    const ts = Array.from({ length: a['per-round'] }, () => r.step());
    r.times.push(...ts);
    return median(ts.map((t) => t.total));
  });
  roundRatios.push(perRound[1] / perRound[0]);
}

// ---- report ----
const info = kiln.buildInfo();
const phases = ['forward', 'backward', 'optimizer', 'total'];
const summary = runs.map((r) => ({
  precision: r.name,
  ms_per_step: median(r.times.map((t) => t.total)),
  ms_per_step_best: Math.min(...r.times.map((t) => t.total)),
  phases_ms_median: Object.fromEntries(phases.map((p) => [p, median(r.times.map((t) => t[p]))])),
  mean_loss: mean(r.losses),
  first_loss: r.losses[0],
  last_loss: r.losses[r.losses.length - 1],
  losses: r.losses,
}));
const [f32, bf16] = summary;
const relDiff = (p, q) => Math.abs(p - q) / Math.abs(q);
const result = {
  model: { vocab: a.vocab, block: a.block, layers: a.layers, embd: a.embd, heads: a.heads, parameters: runs[0].model.numParameters() },
  batch: a.batch,
  tokens_per_step: a.batch * a.block,
  optimizer: { name: 'AdamW', lr: 1e-3, weight_decay: 0.1 },
  data: 'counting sequences modulo vocab, random start and stride in [1, 8], fixed LCG; same batches for both',
  loss_steps: a.steps,
  method: {
    timing: `alternating rounds: ${a.rounds} rounds of ${a['per-round']} steps each, after ${a.steps} loss steps and ${a.warmup} warm-up steps; ms/step = median of all timed steps; ratio = median of per-round ratios`,
    forward: 'forward + loss + loss.item()',
    backward: 'backward + freeing the step tensors (tidy)',
    optimizer: 'AdamW step + zeroGrad',
  },
  threads: info.threads,
  machine: { cpu: os.cpus()[0]?.model, cpus: os.cpus().length, node: process.version, blas: info.blas, simd: info.simd, loadavg_at_start: loadavg },
  date: new Date().toISOString(),
  float32: f32,
  bfloat16_autocast: bf16,
  bf16_over_fp32_time: median(roundRatios),
  bf16_over_fp32_time_per_round: roundRatios,
  mean_loss_rel_diff: relDiff(bf16.mean_loss, f32.mean_loss),
  first_loss_rel_diff: relDiff(bf16.first_loss, f32.first_loss),
  last_loss_rel_diff: relDiff(bf16.last_loss, f32.last_loss),
};
const fmt = (v, d = 1) => v.toFixed(d);
console.log(
  `GPT ${a.layers}x${a.embd} (${a.heads} heads, vocab ${a.vocab}, ${result.model.parameters} parameters), batch ${a.batch} x ${a.block} tokens, ` +
    `AdamW, ${info.threads} thread(s); ${result.machine.cpu}`,
);
console.log(`ms per step (median of ${a.rounds} alternating rounds x ${a['per-round']} steps); loss: mean over the first ${a.steps} steps`);
console.log('precision            ms/step  forward  backward  optimizer  mean loss  first loss  last loss');
for (const s of summary) {
  const p = s.phases_ms_median;
  console.log(
    `${s.precision.padEnd(18)}  ${fmt(s.ms_per_step).padStart(8)}  ${fmt(p.forward).padStart(7)}  ${fmt(p.backward).padStart(8)}  ${fmt(p.optimizer).padStart(9)}` +
      `  ${fmt(s.mean_loss, 4).padStart(9)}  ${fmt(s.first_loss, 4).padStart(10)}  ${fmt(s.last_loss, 4).padStart(9)}`,
  );
}
console.log(
  `bf16/fp32 time per step: ${fmt(result.bf16_over_fp32_time, 2)} (median of per-round ratios); ` +
    `mean loss relative difference: ${(result.mean_loss_rel_diff * 100).toFixed(2)}% ` +
    `(first step ${(result.first_loss_rel_diff * 100).toFixed(3)}%, last ${(result.last_loss_rel_diff * 100).toFixed(2)}%)`,
);
const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'autocast.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(process.cwd(), out)}`);
