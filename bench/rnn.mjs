// Recurrent layers on the CPU, kiln against PyTorch: nn.LSTM and nn.GRU (default: 2 layers, input
// 128, hidden 128, batch 32, sequence 48, float32, [seq, batch, feature] input, 1 thread). For each,
// the forward under noGrad, and forward + backward (output.backward(gy) with a fixed random gy,
// parameter gradients set to none after each call). When /usr/bin/python3 (or $PYTHON) imports
// torch, bench/rnn_torch.py --serve builds the same layers in a child process, and the two are timed
// in alternation, sample by sample, so that load from other processes hits both alike: after --warmup
// calls each, --reps times a kiln sample of --inner calls then a PyTorch sample of --inner calls.
// ms per call is the median of the samples (the JSON also has the best and every sample); torch/kiln
// is the median of the paired samples' ratios (above 1: kiln is faster). Without torch, kiln alone.
// Prints the table and writes bench/results/rnn.json.
//   node bench/rnn.mjs [--threads 1] [--reps 21] [--inner 3] [--warmup 3] [--layers 2]
//                      [--input 128] [--hidden 128] [--batch 32] [--seq 48] [--no-torch]
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as kiln from '../dist/index.mjs';

const spec = { threads: 1, reps: 21, inner: 3, warmup: 3, layers: 2, input: 128, hidden: 128, batch: 32, seq: 48 };
const { values } = parseArgs({
  options: { ...Object.fromEntries(Object.keys(spec).map((k) => [k, { type: 'string' }])), 'no-torch': { type: 'boolean' } },
});
const a = Object.fromEntries(Object.entries(spec).map(([k, d]) => [k, values[k] === undefined ? d : Number(values[k])]));
for (const [k, v] of Object.entries(a)) if (!Number.isInteger(v) || v < (k === 'warmup' ? 0 : 1)) throw new Error(`--${k} must be a positive integer, got ${values[k]}`);

const { nn } = kiln;
kiln.setNumThreads(a.threads);
kiln.manualSeed(0);
const here = path.dirname(fileURLToPath(import.meta.url));
const loadavg = os.loadavg();

function median(xs) {
  const s = [...xs].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// ms per call of `calls` calls of fn.
function timed(fn, calls) {
  const t0 = performance.now();
  for (let i = 0; i < calls; i++) fn();
  return (performance.now() - t0) / calls;
}

// ---- kiln and PyTorch, sample by sample ----
const python = process.env.PYTHON || '/usr/bin/python3';
let torchSkipped = null;
if (values['no-torch']) torchSkipped = '--no-torch';
else if (spawnSync(python, ['-c', 'import torch'], { stdio: 'ignore' }).status !== 0) torchSkipped = `${python} cannot import torch`;
let torch = null, child = null, lines = null;
if (!torchSkipped) {
  const args = Object.entries(a).flatMap(([n, v]) => [`--${n}`, String(v)]);
  child = spawn(python, [path.join(here, 'rnn_torch.py'), '--serve', ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
}
const nextLine = async () => {
  const r = await lines.next();
  if (r.done) throw new Error('bench/rnn_torch.py exited early');
  return r.value;
};
const torchTimed = async (layer, pass, calls) => {
  child.stdin.write(`${layer} ${pass} ${calls}\n`);
  return Number(await nextLine());
};
if (child) torch = JSON.parse(await nextLine());

const x = kiln.randn([a.seq, a.batch, a.input]);
const gy = kiln.randn([a.seq, a.batch, a.hidden]);
const models = { LSTM: new nn.LSTM(a.input, a.hidden, { numLayers: a.layers }), GRU: new nn.GRU(a.input, a.hidden, { numLayers: a.layers }) };
const passes = {
  forward: (m) => () => kiln.tidy(() => kiln.noGrad(() => void m.forward(x))),
  forward_backward: (m) => () => {
    kiln.tidy(() => {
      const [out] = m.forward(x);
      out.backward(gy);
    });
    m.zeroGrad();
  },
};
const samples = {};
for (const [layer, m] of Object.entries(models)) {
  samples[layer] = {};
  for (const [pass, make] of Object.entries(passes)) {
    const fn = make(m);
    const s = (samples[layer][pass] = { kiln: [], torch: torch ? [] : undefined });
    timed(fn, a.warmup);
    if (torch) await torchTimed(layer, pass, a.warmup);
    for (let r = 0; r < a.reps; r++) {
      s.kiln.push(timed(fn, a.inner));
      if (torch) s.torch.push(await torchTimed(layer, pass, a.inner));
    }
  }
}
if (child) child.stdin.end();
for (const m of Object.values(models)) m.dispose();
kiln.dispose([x, gy]);

// ---- report ----
const info = kiln.buildInfo();
const rows = [];
for (const layer of ['LSTM', 'GRU']) {
  for (const pass of ['forward', 'forward_backward']) {
    const { kiln: k, torch: t } = samples[layer][pass];
    rows.push({
      layer, pass,
      kiln_ms: median(k), kiln_ms_best: Math.min(...k),
      torch_ms: t && median(t), torch_ms_best: t && Math.min(...t),
      torch_over_kiln: t && median(t.map((v, i) => v / k[i])),
    });
  }
}
const result = {
  config: { layers: a.layers, input_size: a.input, hidden_size: a.hidden, batch: a.batch, seq: a.seq, dtype: 'float32', batch_first: false },
  method: {
    warmup_calls: a.warmup, reps: a.reps, calls_per_rep: a.inner, alternation: 'kiln sample, then torch sample, per rep',
    figure: 'ms per call: median of the reps; torch_over_kiln: median of the paired reps\' ratios',
    forward: 'no grad', forward_backward: 'output.backward(gy), grads set to none after each call',
  },
  threads: { kiln: info.threads, torch: torch?.threads },
  machine: { cpu: os.cpus()[0]?.model, cpus: os.cpus().length, node: process.version, blas: info.blas, simd: info.simd, torch: torch?.torch, loadavg_at_start: loadavg, loadavg_at_end: os.loadavg() },
  date: new Date().toISOString(),
  torch_skipped: torchSkipped ?? undefined,
  rows,
  samples_ms: samples,
};
const fmt = (v, d = 2) => (v === undefined ? '-' : v.toFixed(d));
console.log(
  `nn.LSTM / nn.GRU, ${a.layers} layers, ${a.input} -> ${a.hidden}, batch ${a.batch}, seq ${a.seq}, float32, ` +
    `${info.threads} thread(s); ${result.machine.cpu}` + (torch ? `; torch ${torch.torch}` : `; no PyTorch (${torchSkipped})`),
);
console.log(`ms per call, median of ${a.reps} samples of ${a.inner} calls, kiln and PyTorch alternating; torch/kiln: median of paired ratios, > 1: kiln faster`);
console.log('layer  pass                kiln ms  torch ms  torch/kiln');
for (const r of rows) {
  console.log(`${r.layer.padEnd(5)}  ${r.pass.padEnd(16)}  ${fmt(r.kiln_ms).padStart(9)}  ${fmt(r.torch_ms).padStart(8)}  ${fmt(r.torch_over_kiln).padStart(10)}`);
}
const out = path.join(here, 'results', 'rnn.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(process.cwd(), out)}`);
