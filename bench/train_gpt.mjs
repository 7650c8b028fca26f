// GPT training throughput of kiln on the CPU, the kiln half of a side-by-side with PyTorch
// (bench/train_gpt_torch.py builds the same model; bench/train_gpt.sh runs both and prints the
// ratio). The model is GPT-2's layout at a small size: 4 layers, 256 wide, 4 heads, context 128,
// GPT-2's vocabulary (50257) with the output head tied to the token embedding; batch 16; AdamW.
// A step is forward, loss, backward, optimizer step and zeroing the gradients on random tokens.
// After warm-up steps, each timed step is measured; tokens/s uses the median step time.
// Writes bench/results/train_gpt_kiln.json.
//   node bench/train_gpt.mjs [--threads 2] [--steps 10] [--warmup 3] [--batch 16] [--block 128]
//                            [--layers 4] [--embd 256] [--heads 4] [--vocab 50257]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const spec = { threads: 2, steps: 10, warmup: 3, batch: 16, block: 128, layers: 4, embd: 256, heads: 4, vocab: 50257 };
const { values } = parseArgs({ options: Object.fromEntries(Object.keys(spec).map((k) => [k, { type: 'string' }])) });
const a = Object.fromEntries(Object.entries(spec).map(([k, d]) => [k, values[k] === undefined ? d : Number(values[k])]));
for (const [k, v] of Object.entries(a)) if (!Number.isInteger(v) || v < (k === 'warmup' ? 0 : 1)) throw new Error(`--${k} must be a positive integer, got ${values[k]}`);

const kiln = await import('kiln');
const { nn, optim } = kiln;
kiln.setNumThreads(a.threads);
kiln.manualSeed(0);

const model = new nn.GPT({ vocabSize: a.vocab, blockSize: a.block, nLayer: a.layers, nHead: a.heads, nEmbd: a.embd });
const optimizer = new optim.AdamW(model.parameters(), { lr: 3e-4, weightDecay: 0.1 });
const x = kiln.randint(0, a.vocab, [a.batch, a.block]);
const y = kiln.randint(0, a.vocab, [a.batch, a.block]);

function step() {
  const loss = kiln.tidy(() => {
    const l = model.forward(x, y).loss;
    l.backward();
    return l.item();
  });
  optimizer.step();
  optimizer.zeroGrad();
  return loss;
}

const losses = [];
for (let i = 0; i < a.warmup; i++) losses.push(step());
const times = [];
for (let i = 0; i < a.steps; i++) {
  const t0 = process.hrtime.bigint();
  losses.push(step());
  times.push(Number(process.hrtime.bigint() - t0) / 1e9);
}
const sorted = [...times].sort((p, q) => p - q);
const median = sorted.length % 2 ? sorted[sorted.length >> 1] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
const tokens = a.batch * a.block;
const info = kiln.buildInfo();
const result = {
  framework: 'kiln',
  model: { vocab: a.vocab, block: a.block, layers: a.layers, embd: a.embd, heads: a.heads, parameters: model.numParameters() },
  batch: a.batch,
  threads: info.threads,
  warmup_steps: a.warmup,
  timed_steps: a.steps,
  tokens_per_step: tokens,
  tokens_per_s: tokens / median,
  tokens_per_s_best: tokens / sorted[0],
  ms_per_step_median: median * 1e3,
  ms_per_step_best: sorted[0] * 1e3,
  first_loss: losses[0],
  last_loss: losses[losses.length - 1],
  machine: { cpu: os.cpus()[0]?.model, cpus: os.cpus().length, node: process.version, blas: info.blas, omp_wait_policy: process.env.OMP_WAIT_POLICY },
  date: new Date().toISOString(),
};
console.log(
  `kiln: GPT ${a.layers}x${a.embd} (${(result.model.parameters / 1e6).toFixed(1)}M parameters), batch ${a.batch} x ${a.block} tokens, ${info.threads} threads: ` +
    `${result.tokens_per_s.toFixed(0)} tokens/s (median of ${a.steps} steps, ${result.ms_per_step_median.toFixed(0)} ms/step; best ${result.tokens_per_s_best.toFixed(0)}); ` +
    `loss ${result.first_loss.toFixed(3)} -> ${result.last_loss.toFixed(3)}`,
);
const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'train_gpt_kiln.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(process.cwd(), out)}`);
