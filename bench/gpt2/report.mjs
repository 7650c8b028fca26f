// The summary of bench/gpt2: reads kiln.json, torch_eager.json and torch_compile.json (whichever ran)
// from --work, and writes gpt2.json (the summary and those three) and gpt2.md to --out (the markdown table is the README's), printing
// the table. Per run: ms/step (median of the timed steps), tokens/s, MFU and peak memory; kiln's
// ratio_vs_eager and ratio_vs_compile are kiln's tokens/s over theirs (above 1: kiln is faster).
// MFU = flops/token * tokens/s / peak, with flops/token = 6*N + 12*L*T*E (PaLM's appendix B, as
// nanoGPT counts it): N the parameters without the position embedding (the tied head counted
// once), L layers, T the context, E the width; the attention term counts the full T x T scores
// (causal masking is not subtracted). Peak: --peak-tflops, 989 for CUDA (the H200's dense bf16
// tensor-core peak), none on the CPU (no MFU). Numerics: kiln's loss at each check step against
// PyTorch eager's, |kiln - torch| / |torch|; passes when the largest is under 1%. With --profile
// runs, a table of GPU ms per step by kernel family for each side.
//   node bench/gpt2/report.mjs --work DIR --out DIR [--peak-tflops 989] [--note TEXT]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { work: { type: 'string' }, out: { type: 'string' }, 'peak-tflops': { type: 'string' }, note: { type: 'string', multiple: true } } });
if (!values.work || !values.out) throw new Error('--work and --out are required');
const read = (f) => {
  const p = path.join(values.work, f);
  return fs.existsSync(p) ? JSON.parse(fs.readFileSync(p, 'utf8')) : null;
};
const kiln = read('kiln.json'), eager = read('torch_eager.json'), compiled = read('torch_compile.json');
if (!kiln) throw new Error(`no kiln.json in ${values.work}: the kiln side did not finish`);
const peakTflops = values['peak-tflops'] !== undefined ? Number(values['peak-tflops']) : null;

const m = kiln.model;
const flopsPerToken = 6 * (m.parameters - m.block * m.embd) + 12 * m.layers * m.block * m.embd;
const row = (r) => {
  const tokensPerS = r.tokens_per_step / (r.ms_per_step / 1e3);
  return {
    variant: r.variant,
    ms_per_step: r.ms_per_step,
    tokens_per_s: tokensPerS,
    mfu: peakTflops ? (flopsPerToken * tokensPerS) / (peakTflops * 1e12) : null,
    peak_memory_bytes: r.peak_memory_bytes,
    reserved_memory_bytes: r.reserved_memory_bytes,
    compile_s: r.compile_s ?? null,
  };
};
const runs = { kiln: row(kiln), torch_eager: eager && row(eager), torch_compile: compiled && row(compiled) };
const ratio = (other) => (other ? runs.kiln.tokens_per_s / other.tokens_per_s : null);

// Relative differences of a's check losses from the reference ref's, step by step.
const relDiff = (a, ref) => a.check_losses.map((l, i) => Math.abs(l - ref.check_losses[i]) / Math.abs(ref.check_losses[i]));
let numerics = null;
if (eager) {
  const rel = relDiff(kiln, eager);
  const max = Math.max(...rel);
  numerics = { steps: rel.length, kiln_losses: kiln.check_losses, torch_losses: eager.check_losses, rel_diff: rel, max_rel_diff: max, tolerance: 0.01, pass: max < 0.01 };
  // For scale: how far torch.compile's own losses drift from eager's on the same steps.
  if (compiled) numerics.compile_vs_eager_max_rel_diff = Math.max(...relDiff(compiled, eager));
}

const summary = {
  model: m,
  batch: kiln.batch,
  tokens_per_step: kiln.tokens_per_step,
  device: kiln.device,
  flops_per_token: flopsPerToken,
  flops_formula: '6*N + 12*L*T*E per token (N: parameters without wpe)',
  peak_tflops: peakTflops,
  runs,
  ratio_vs_eager: ratio(runs.torch_eager),
  ratio_vs_compile: ratio(runs.torch_compile),
  numerics,
  notes: values.note ?? [],
  versions: { kiln: kiln.versions, torch: (eager ?? compiled)?.versions ?? null },
  results: { kiln, torch_eager: eager, torch_compile: compiled },
  date: new Date().toISOString(),
};

const mib = (b) => (b == null ? 'n/a' : `${(b / 2 ** 20).toFixed(0)} MiB`);
const lines = [
  `GPT-2 ${m.layers} layers x ${m.embd} wide, ${m.heads} heads, vocab ${m.vocab}, context ${m.block} (${(m.parameters / 1e6).toFixed(1)}M parameters), batch ${kiln.batch}, ${kiln.device}`,
  '',
  '| run | ms/step | tokens/s | MFU | peak memory | compile |',
  '| --- | ---: | ---: | ---: | ---: | ---: |',
];
for (const [name, r] of Object.entries(runs)) {
  if (!r) {
    lines.push(`| ${name} | did not run | | | | |`);
    continue;
  }
  const mfu = r.mfu == null ? 'n/a' : `${(r.mfu * 100).toFixed(1)}%`;
  lines.push(`| ${r.variant} | ${r.ms_per_step.toFixed(1)} | ${r.tokens_per_s.toFixed(0)} | ${mfu} | ${mib(r.peak_memory_bytes)} | ${r.compile_s == null ? '' : `${r.compile_s.toFixed(1)} s`} |`);
}
const fmt = (x) => (x == null ? 'n/a' : `${x.toFixed(2)}x`);
lines.push('', `kiln tokens/s over PyTorch eager: ${fmt(summary.ratio_vs_eager)}; over torch.compile: ${fmt(summary.ratio_vs_compile)}`);
lines.push(`MFU: ${flopsPerToken.toExponential(3)} flops/token (${summary.flops_formula}) over ${peakTflops ? `${peakTflops} TFLOPS` : 'no stated peak'}`);
if (numerics) {
  lines.push(`Loss, kiln vs PyTorch eager, ${numerics.steps} steps from the same weights and batches: max relative difference ${(numerics.max_rel_diff * 100).toFixed(3)}% (${numerics.pass ? 'PASS' : 'FAIL'}, tolerance 1%)` +
      (numerics.compile_vs_eager_max_rel_diff === undefined ? '' : `; torch.compile vs eager: ${(numerics.compile_vs_eager_max_rel_diff * 100).toFixed(3)}%`));
}
if (kiln.host_ms_per_step != null && !kiln.device.startsWith('cpu')) {
  lines.push(`kiln host time enqueueing a step: ${kiln.host_ms_per_step.toFixed(1)} ms of ${kiln.ms_per_step.toFixed(1)} (near it, the GPU waits for JavaScript)`);
}
// GPU ms per step by kernel family, side by side (from --profile).
const profiled = Object.entries(summary.results).filter(([, r]) => r?.profile && !r.profile.error);
if (profiled.length) {
  const families = [...new Set(profiled.flatMap(([, r]) => Object.keys(r.profile.families_ms_per_step)))];
  const total = (r) => r.profile.gpu_ms_per_step;
  families.sort((f, g) => (profiled[0][1].profile.families_ms_per_step[g] ?? 0) - (profiled[0][1].profile.families_ms_per_step[f] ?? 0));
  lines.push('', `GPU ms per step by kernel family (${profiled.map(([n, r]) => `${n}: ${r.profile.steps} profiled steps`).join(', ')}):`, '');
  lines.push(`| family | ${profiled.map(([n]) => n).join(' | ')} |`, `| --- |${profiled.map(() => ' ---: |').join('')}`);
  for (const f of families) lines.push(`| ${f} | ${profiled.map(([, r]) => (r.profile.families_ms_per_step[f] ?? 0).toFixed(2)).join(' | ')} |`);
  lines.push(`| total | ${profiled.map(([, r]) => total(r).toFixed(2)).join(' | ')} |`);
}
for (const [n, r] of Object.entries(summary.results)) if (r?.profile?.error) lines.push(`Note: ${n}'s profile failed: ${r.profile.error}`);
for (const n of summary.notes) lines.push(`Note: ${n}`);
const md = lines.join('\n') + '\n';
fs.mkdirSync(values.out, { recursive: true });
fs.writeFileSync(path.join(values.out, 'gpt2.json'), JSON.stringify(summary, null, 2) + '\n');
fs.writeFileSync(path.join(values.out, 'gpt2.md'), md);
process.stdout.write(md);
if (numerics && !numerics.pass) process.exitCode = 1;
