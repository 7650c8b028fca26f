// Fused attention (kiln.flashAttention) against the unfused path (nn.attention: matmul, masked
// softmax, matmul) on the CPU: forward + backward of causal self-attention over q, k, v
// [batch, heads, T, D] in float32, for each T in --lengths. The two are timed in alternation, sample
// by sample, so that load from other processes hits both alike; ms per call is the median of the
// samples, and the peak bytes above the inputs (kiln.memory().peakBytes) of one call each.
// Prints the table and writes bench/results/attention.json.
//   node bench/attention.mjs [--threads 1] [--reps 9] [--batch 2] [--heads 4] [--dim 64] [--lengths 256,512]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as kiln from '../dist/index.mjs';

const spec = { threads: 1, reps: 9, batch: 2, heads: 4, dim: 64 };
const { values } = parseArgs({
  options: { ...Object.fromEntries(Object.keys(spec).map((k) => [k, { type: 'string' }])), lengths: { type: 'string' } },
});
const a = Object.fromEntries(Object.entries(spec).map(([k, d]) => [k, values[k] === undefined ? d : Number(values[k])]));
for (const [k, v] of Object.entries(a)) if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be a positive integer, got ${values[k]}`);
const lengths = (values.lengths ?? '256,512').split(',').map(Number);

const { nn } = kiln;
kiln.setNumThreads(a.threads);

function inputs(T) {
  const shape = [a.batch, a.heads, T, a.dim];
  return [1, 2, 3].map((s) => {
    kiln.manualSeed(s);
    const x = kiln.randn(shape);
    x.requiresGrad = true;
    return x;
  });
}

// One forward + backward; gradients reset after.
function step(f, qkv, T) {
  kiln.tidy(() => {
    const out = f(...qkv, T);
    out.sum().backward();
  });
  for (const x of qkv) {
    x.grad?.dispose();
    x.grad = null;
  }
}

const fused = (q, k, v) => kiln.flashAttention(q, k, v, { causal: true });
const plain = (q, k, v, T) => nn.attention(q, k, v, { masks: [nn.causalMask(T)] }).output;

const median = (xs) => [...xs].sort((x, y) => x - y)[xs.length >> 1];
const rows = [];
for (const T of lengths) {
  const qkv = inputs(T);
  const peak = (f) => {
    kiln.resetPeakMemory();
    const base = kiln.memory().bytes;
    step(f, qkv, T);
    return kiln.memory().peakBytes - base;
  };
  const mem = { fused: peak(fused), plain: peak(plain) };
  const ms = { fused: [], plain: [] };
  for (let r = 0; r < a.reps; r++) {
    for (const [name, f] of [['fused', fused], ['plain', plain]]) {
      const t0 = performance.now();
      step(f, qkv, T);
      ms[name].push(performance.now() - t0);
    }
  }
  rows.push({ T, fusedMs: median(ms.fused), plainMs: median(ms.plain), fusedPeakBytes: mem.fused, plainPeakBytes: mem.plain, samples: ms });
  for (const x of qkv) x.dispose();
}

console.log(`causal attention forward + backward, float32, [${a.batch}, ${a.heads}, T, ${a.dim}], ${a.threads} thread(s)`);
console.log('T      fused ms   unfused ms   unfused/fused   fused peak MiB   unfused peak MiB');
for (const r of rows) {
  const mib = (b) => (b / 2 ** 20).toFixed(2).padStart(16);
  console.log(`${String(r.T).padEnd(6)} ${r.fusedMs.toFixed(2).padStart(8)} ${r.plainMs.toFixed(2).padStart(12)} ${(r.plainMs / r.fusedMs).toFixed(2).padStart(15)} ${mib(r.fusedPeakBytes)} ${mib(r.plainPeakBytes)}`);
}
const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');
fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(path.join(dir, 'attention.json'), JSON.stringify({ args: a, lengths, rows }, null, 2) + '\n');
