#!/usr/bin/env node
// kiln's CPU benchmark (`npm run bench`, after `npm run build`): float32 GEMM through kiln.matmul
// against OpenBLAS's cblas_sgemm called directly (the addon's gemmRaw entry point: same process, same
// sizes, same thread count, output preallocated), plus kiln's built-in GEMM kernel for reference;
// and elementwise add/mul bandwidth against a plain contiguous copy of the same bytes. Contenders
// are timed in alternating rounds so that load from other processes hits them alike (the built-in
// GEMM apart: its threads and OpenBLAS's disturb each other when they alternate). Rates in the
// table are each one's best round (the least disturbed by other load; the JSON also has medians);
// kiln/OpenBLAS and op/copy are medians of per-round ratios. Prints the table and writes
// bench/results/cpu.json.
//   node bench/run.js [--sizes=256,1024,2048] [--elements=16777216] [--seconds=2] [--threads=N]
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const kiln = require('../dist');
const { gemmRaw } = require('../dist/ops/matmul');

const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const m = /^--([^=]+)=(.*)$/.exec(a);
    if (!m) throw new Error(`bench: unknown argument ${a}`);
    return [m[1], m[2]];
  }),
);
const sizes = (args.sizes || '256,1024,2048').split(',').map(Number);
const elements = Number(args.elements || 16 * 1024 * 1024);
const seconds = Number(args.seconds || 2);
if (args.threads) kiln.setNumThreads(Number(args.threads));
const info = kiln.buildInfo();

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Times each contender (a function doing one operation) in alternating rounds for about `budget`
 * seconds in all; returns {best, median, samples} (seconds per operation, samples per round) of each.
 */
function race(contenders, budget) {
  const names = Object.keys(contenders);
  // Warm up, and size a round to about 25 ms per contender.
  const reps = {};
  for (const n of names) {
    contenders[n]();
    const t0 = process.hrtime.bigint();
    contenders[n]();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    reps[n] = Math.max(1, Math.round(0.025 / Math.max(dt, 1e-7)));
  }
  const samples = Object.fromEntries(names.map((n) => [n, []]));
  const end = Date.now() + budget * 1000;
  let rounds = 0;
  while (rounds < 3 || (Date.now() < end && rounds < 400)) {
    for (const n of names) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < reps[n]; i++) contenders[n]();
      samples[n].push(Number(process.hrtime.bigint() - t0) / 1e9 / reps[n]);
    }
    rounds++;
  }
  return Object.fromEntries(
    names.map((n) => [n, { best: Math.min(...samples[n]), median: median(samples[n]), samples: samples[n] }]),
  );
}

function randomFloat32(shape, seed) {
  let s = seed >>> 0;
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    v[i] = s / 4294967296 - 0.5;
  }
  return kiln.tensor(v, { shape });
}

const results = {
  machine: { cpu: os.cpus()[0]?.model, cpus: os.cpus().length, threads: info.threads, blas: info.blas, node: process.version },
  gemm: [],
  elementwise: [],
};

// ---- GEMM ----
for (const n of sizes) {
  const a = randomFloat32([n, n], 1), b = randomFloat32([n, n], 2), c = kiln.zeros([n, n]);
  // kiln and OpenBLAS alternate; the built-in kernel runs on its own, as its OpenMP threads and
  // OpenBLAS's own thread pool slow each other down when they take turns.
  const contenders = { kiln: () => kiln.matmul(a, b).dispose() };
  if (info.blas === 'openblas') contenders.openblas = () => gemmRaw('blas', a, b, c, false, false, 1, 0);
  const budget = seconds * (n >= 2048 ? 3 : 1);
  const t = {
    ...race(contenders, budget),
    ...race({ builtin: () => gemmRaw('builtin', a, b, c, false, false, 1, 0) }, budget / 2),
  };
  const row = { size: n };
  for (const [name, s] of Object.entries(t)) {
    row[`${name}_gflops`] = (2 * n * n * n) / s.best / 1e9;
    row[`${name}_gflops_median`] = (2 * n * n * n) / s.median / 1e9;
  }
  if (t.openblas) {
    // Round by round the two ran back to back: the median of their ratios cancels load that drifts.
    row.kiln_vs_openblas = median(t.kiln.samples.map((k, i) => t.openblas.samples[i] / k));
    row.builtin_vs_openblas = t.openblas.best / t.builtin.best;
  }
  results.gemm.push(row);
  for (const x of [a, b, c]) x.dispose();
}

// ---- elementwise bandwidth (contiguous float32) ----
{
  const x = randomFloat32([elements], 3), y = randomFloat32([elements], 4), dst = kiln.zeros([elements]);
  const mb = (elements * 4) / 1e9; // GB per tensor
  const probe = (f) => {
    try {
      f();
      return true;
    } catch (e) {
      if (/not implemented/.test(String(e && e.message))) return false;
      throw e;
    }
  };
  // In place: kernel bandwidth alone. Allocating: what `x.add(y)` costs a user (fresh output pages).
  const forms = [
    { form: 'in place', copy: () => dst.copy_(x), add: () => dst.add_(y), mul: () => dst.mul_(y) },
    { form: 'allocating', copy: () => x.clone().dispose(), add: () => kiln.add(x, y).dispose(), mul: () => kiln.mul(x, y).dispose() },
  ];
  for (const f of forms) {
    const contenders = { copy: f.copy };
    for (const op of ['add', 'mul']) if (probe(f[op])) contenders[op] = f[op];
    const t = race(contenders, seconds);
    const copyGBs = (2 * mb) / t.copy.best;
    for (const op of ['add', 'mul']) {
      if (!t[op]) {
        results.elementwise.push({ op, form: f.form, skipped: 'not implemented in this build' });
        continue;
      }
      const gbs = (3 * mb) / t[op].best;
      const vsCopy = median(t[op].samples.map((s, i) => (3 * t.copy.samples[i]) / (2 * s)));
      results.elementwise.push({
        op, form: f.form, elements, gbs, copy_gbs: copyGBs, vs_copy: vsCopy,
        gbs_median: (3 * mb) / t[op].median, copy_gbs_median: (2 * mb) / t.copy.median,
      });
    }
  }
  for (const v of [x, y, dst]) v.dispose();
}

// ---- report ----
const fmt = (v, d = 1) => (v === undefined ? '-' : v.toFixed(d));
console.log(`kiln CPU benchmark: ${results.machine.cpu}, ${results.machine.threads} threads, GEMM library: ${info.blas}`);
console.log('\nfloat32 GEMM (n x n @ n x n), GFLOP/s (best round); target kiln/OpenBLAS >= 0.9');
console.log('   n      kiln  OpenBLAS  kiln/OpenBLAS   builtin  builtin/OpenBLAS   (kiln/OpenBLAS: median of per-round ratios)');
for (const r of results.gemm) {
  console.log(
    `${String(r.size).padStart(4)}  ${fmt(r.kiln_gflops).padStart(8)}  ${fmt(r.openblas_gflops).padStart(8)}  ` +
      `${fmt(r.kiln_vs_openblas, 2).padStart(13)}  ${fmt(r.builtin_gflops).padStart(8)}  ${fmt(r.builtin_vs_openblas, 2).padStart(16)}`,
  );
}
console.log(`\nelementwise float32, ${elements} elements, GB/s (bytes read + written, best round); target op/copy >= 0.7`);
console.log('  op  form           op GB/s  copy GB/s  op/copy   (op/copy: median of per-round ratios)');
for (const r of results.elementwise) {
  if (r.skipped) console.log(`${r.op.padStart(4)}  ${r.form.padEnd(12)}  ${r.skipped}`);
  else console.log(`${r.op.padStart(4)}  ${r.form.padEnd(12)}  ${fmt(r.gbs).padStart(8)}  ${fmt(r.copy_gbs).padStart(9)}  ${fmt(r.vs_copy, 2).padStart(7)}`);
}
const out = path.join(__dirname, 'results', 'cpu.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify(results, null, 2) + '\n');
console.log(`\nwrote ${path.relative(process.cwd(), out)}`);
