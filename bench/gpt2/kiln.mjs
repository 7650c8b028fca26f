// The kiln side of bench/gpt2 (run.sh runs it first, then bench/gpt2/torch_gpt2.py on what it writes).
// Builds nn.GPT at the given size (GPT-2 124M by default), writes its initial weights and the
// batches (random tokens from a fixed LCG, so nothing depends on either framework's RNG) to
// <work>/init.safetensors for PyTorch to load, then trains under bfloat16 autocast with AdamW
// (lr 3e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.1 on every parameter): --check steps on
// batches 0..check-1 (their losses are what run.sh compares), --warmup more, then --steps timed
// steps. A step is forward + loss (+ loss.item(), which waits for the device), backward, optimizer
// step, zeroing the gradients. On CUDA, --profile N then runs N more steps under
// kiln.cuda.profileKernels (without the loss read) and records GPU ms per step by kernel family and
// the top kernels. Also recorded: host_ms_per_step, the time the host spends enqueueing a step (all
// but the wait in loss.item()); near ms_per_step, the GPU waits for JavaScript. Writes <work>/kiln.json.
// --flash 0 makes CUDA attention take the unfused path (kiln.cuda.setFlashAttention(false)). --graph 1
// (CUDA) makes AdamW capturable and the timed steps replays of one captured step (kiln.cuda.CUDAGraph),
// each after copying its batch into the graph's input tensors: no JavaScript per op.
//   node bench/gpt2/kiln.mjs --work DIR [--device cuda] [--steps 20] [--warmup 3] [--profile 0] [--flash 1] [--graph 0]
//        [--check 20] [--batch 16] [--block 1024] [--layers 12] [--embd 768] [--heads 12] [--vocab 50304]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as kiln from '../../dist/index.mjs';

const spec = { steps: 20, warmup: 3, check: 20, batch: 16, block: 1024, layers: 12, embd: 768, heads: 12, vocab: 50304, threads: 0, profile: 0, flash: 1, graph: 0 };
const { values } = parseArgs({
  options: { ...Object.fromEntries(Object.keys(spec).map((k) => [k, { type: 'string' }])), device: { type: 'string' }, work: { type: 'string' } },
});
const a = Object.fromEntries(Object.entries(spec).map(([k, d]) => [k, values[k] === undefined ? d : Number(values[k])]));
for (const [k, v] of Object.entries(a)) if (!Number.isInteger(v) || v < (['warmup', 'threads', 'profile', 'flash', 'graph'].includes(k) ? 0 : 1)) throw new Error(`--${k} must be a positive integer, got ${values[k]}`);
if (!values.work) throw new Error('--work is required');
const device = values.device ?? 'cpu';
const cuda = device.startsWith('cuda');
if (a.threads) kiln.setNumThreads(a.threads);
if (cuda) kiln.cuda.setFlashAttention(a.flash !== 0);
if (a.graph && !cuda) throw new Error('--graph 1 needs --device cuda');

// ---- model and data, written for PyTorch ----
kiln.manualSeed(0);
const model = new kiln.nn.GPT({ vocabSize: a.vocab, blockSize: a.block, nLayer: a.layers, nHead: a.heads, nEmbd: a.embd });
let seed = 12345;
const rand = (n) => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return Math.floor((seed / 4294967296) * n);
};
const tokens = (n) => {
  const v = new BigInt64Array(n);
  for (let i = 0; i < n; i++) v[i] = BigInt(rand(a.vocab));
  return kiln.tensor(v, { shape: [a.batch, a.block], dtype: 'int64' });
};
const batches = Array.from({ length: a.check }, () => [tokens(a.batch * a.block), tokens(a.batch * a.block)]);
const saved = Object.fromEntries(model.namedParameters());
batches.forEach(([x, y], i) => Object.assign(saved, { [`batch.${i}.x`]: x, [`batch.${i}.y`]: y }));
fs.mkdirSync(values.work, { recursive: true });
kiln.io.saveSafetensors(path.join(values.work, 'init.safetensors'), saved, { tied: 'lmHead.weight=wte.weight' });

model.to({ device });
const onDevice = batches.map((b) => b.map((t) => t.to({ device })));
const optimizer = new kiln.optim.AdamW(model.parameters(), { lr: 3e-4, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.1, capturable: a.graph !== 0 });

// One step's work on batch i (or on x, y), enqueued; returns the loss tensor (reading it waits for the device).
function enqueueStep(i, [x, y] = onDevice[i % onDevice.length]) {
  const loss = kiln.tidy(() => {
    const l = kiln.autocast({ dtype: 'bfloat16' }, () => model.forward(x, y).loss);
    l.backward();
    return l;
  });
  optimizer.step();
  optimizer.zeroGrad();
  return loss;
}

let hostMs = 0; // time spent enqueueing the timed steps
function step(i) {
  const t0 = performance.now();
  const loss = enqueueStep(i);
  hostMs += performance.now() - t0;
  const value = loss.item();
  loss.dispose();
  return value;
}

// --graph: one step captured after the eager ones, replayed on each batch copied into its inputs.
let graph = null;
function replayStep(i) {
  const t0 = performance.now();
  const [x, y] = onDevice[i % onDevice.length];
  graph.x.copy_(x);
  graph.y.copy_(y);
  optimizer.syncLr();
  graph.g.replay();
  hostMs += performance.now() - t0;
  return graph.loss.item();
}

if (cuda) kiln.cuda.resetPeakMemoryStats();
kiln.resetPeakMemory();
const losses = [];
const t0 = performance.now();
for (let i = 0; i < a.check + a.warmup; i++) {
  losses.push(step(i));
  // One line per untimed step: a run cut short by its timeout still shows how far it got.
  console.log(`kiln step ${i}: loss ${losses[i].toFixed(4)}, ${((performance.now() - t0) / 1e3).toFixed(1)} s`);
}
let captureMs = null;
if (a.graph) {
  const c0 = performance.now();
  const x = onDevice[0][0].clone(), y = onDevice[0][1].clone();
  const g = new kiln.cuda.CUDAGraph();
  graph = { g, x, y, loss: g.capture(() => enqueueStep(0, [x, y])) };
  captureMs = performance.now() - c0;
  console.log(`kiln: captured one step as a CUDA graph in ${captureMs.toFixed(0)} ms`);
}
const times = [];
hostMs = 0;
for (let i = 0; i < a.steps; i++) {
  const s0 = performance.now();
  losses.push(graph ? replayStep(i) : step(i));
  if (cuda) kiln.cuda.synchronize();
  times.push(performance.now() - s0);
}
const sorted = [...times].sort((p, q) => p - q);
const median = sorted.length % 2 ? sorted[sorted.length >> 1] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
const stats = cuda ? kiln.cuda.memoryStats() : null;

// GPU time per kernel family over --profile more steps (after the memory figures: profiling adds nothing to them).
let profile = null;
if (cuda && a.profile > 0) {
  const p = kiln.cuda.profileKernels(() => {
    for (let i = 0; i < a.profile; i++) enqueueStep(i).dispose();
  });
  const perStep = (ms) => ms / a.profile;
  profile = {
    steps: a.profile,
    gpu_ms_per_step: perStep(p.gpuMs),
    host_ms_per_step: perStep(p.hostMs),
    families_ms_per_step: Object.fromEntries(Object.entries(p.families).map(([f, ms]) => [f === 'softmax' ? 'softmax/loss' : f, perStep(ms)])),
    top_kernels: p.kernels.slice(0, 15).map((k) => ({ name: k.name, family: k.family, ms_per_step: perStep(k.ms), calls_per_step: k.calls / a.profile })),
  };
}
const info = kiln.buildInfo();
const result = {
  framework: 'kiln',
  variant: `kiln bf16 autocast${cuda && !a.flash ? ', unfused attention' : ''}${graph ? ', CUDA graph' : ''}`,
  device: cuda ? kiln.cuda.getDeviceName() : `cpu (${os.cpus()[0]?.model}, ${info.threads} threads)`,
  model: { vocab: a.vocab, block: a.block, layers: a.layers, embd: a.embd, heads: a.heads, parameters: model.numParameters() },
  batch: a.batch,
  tokens_per_step: a.batch * a.block,
  timed_steps: a.steps,
  ms_per_step: median,
  ms_per_step_best: sorted[0],
  host_ms_per_step: hostMs / a.steps,
  graph_capture_ms: captureMs,
  profile,
  check_losses: losses.slice(0, a.check),
  last_loss: losses[losses.length - 1],
  // Peak bytes held by tensors (the caching allocator's on CUDA, the native CPU allocations otherwise),
  // and the process's view: what the allocator took from the driver, and the host RSS.
  peak_memory_bytes: cuda ? stats.peakAllocated : kiln.memory().peakBytes,
  reserved_memory_bytes: cuda ? stats.reserved : null,
  host_rss_bytes: process.memoryUsage().rss,
  versions: { node: process.version, kiln_blas: info.blas },
  date: new Date().toISOString(),
};
fs.writeFileSync(path.join(values.work, 'kiln.json'), JSON.stringify(result, null, 2) + '\n');
console.log(`kiln: ${median.toFixed(1)} ms/step (median of ${a.steps}), loss ${losses[0].toFixed(4)} -> ${result.last_loss.toFixed(4)}`);
