// `kiln finetune`, `kiln classify` and `kiln generate` on fine-tuned runs, as a user runs them: a base
// GPT trained with kiln train on the toy language is fine-tuned as a classifier (sums vs sentences)
// with full, LoRA and prompt tuning and scored on held-out texts; fine-tuned as a language model with
// LoRA (base weights bit-identical, PEFT adapter written) and a soft prompt; a resumed fine-tuning
// equals an uninterrupted one; a Hugging Face GPT-2 folder as base, exported back; and bad inputs
// (missing base, wrong layout, a config that does not match the weights, bad data) get one line.
import t, { Test } from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { GPT } from '../../lib/nn/gpt';
import { disposeCheckpoint, readCheckpoint } from '../../lib/io/checkpoint';
import { manualSeed } from '../../lib/index';
import { toyCorpus } from '../../lib/train/corpus';
import { ensureBuilt, expectOneLineError, runKiln } from '../helpers/cli';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-finetune-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const kiln = (args: string[]) => runKiln(args, dir);
const fail = (t: Test, args: string[], pattern: RegExp, code = 2) => expectOneLineError(t, args, dir, pattern, code);
const file = (name: string) => path.join(dir, name);
const summary = (out: string) => JSON.parse(fs.readFileSync(file(`${out}/summary.json`), 'utf8'));
const quiet = ['--progress', 'none', '--threads', '1'];

/** Labelled toy lines: a sum ("3 + 4 = 7.") or a sentence. */
function labelled(lines: number, seed: number): string {
  return toyCorpus({ lines, seed }).split('\n').filter(Boolean)
    .map((l) => JSON.stringify({ text: l, label: l.includes('=') ? 'sum' : 'sentence' })).join('\n');
}

t.before(() => {
  ensureBuilt();
  const r = kiln(['train', '--steps', '150', '--n-layer', '1', '--n-embd', '32', '--out', 'base', '--sample-tokens', '0', ...quiet]);
  if (r.code !== 0) throw new Error(`kiln train failed: ${r.stderr}`);
  fs.writeFileSync(file('train.jsonl'), labelled(1500, 11));
  fs.writeFileSync(file('test.jsonl'), labelled(400, 12));
  fs.writeFileSync(file('sums.txt'), toyCorpus({ lines: 3000, seed: 13 }).split('\n').filter((l) => l.includes('=')).join('\n'));
});

/** The weights of a checkpoint, by name, as raw bytes. */
function weights(ckpt: string): Map<string, Buffer> {
  const c = readCheckpoint(file(ckpt));
  const out = new Map<string, Buffer>();
  for (const [k, v] of c.weights) out.set(k, Buffer.from((v.contiguous().dataSync() as Float32Array).buffer.slice(0)));
  disposeCheckpoint(c);
  return out;
}

t.test('classification: full, LoRA and prompt fine-tunes reach 95% on held-out texts; kiln classify reads them', async (t) => {
  const options: Record<string, string[]> = { full: ['--lr', '1e-3'], lora: ['--lr', '3e-3'], prompt: ['--lr', '3e-2', '--prompt-tokens', '8'] };
  for (const [mode, extra] of Object.entries(options)) {
    const out = `cls-${mode}`;
    const r = kiln(['finetune', '--base', 'base', '--data', 'train.jsonl', '--task', 'classify', '--mode', mode, '--steps', '80', '--eval-interval', '40', ...extra, '--out', out, ...quiet]);
    t.equal(r.code, 0, `${mode}: exit 0 ${r.stderr}`);
    t.match(r.stdout, /classifier over 2 classes/);
    t.match(r.stdout, /validation accuracy: \d+\.\d%/);
    const s = summary(out);
    t.ok(s.valAccuracy >= 0.95, `${mode}: validation accuracy ${s.valAccuracy}`);
    if (mode === 'full') t.equal(s.trainableParameters, s.totalParameters);
    else t.ok(s.trainableParameters < 0.1 * s.totalParameters, `${mode} trains ${s.trainableParameters} of ${s.totalParameters}`);
    const metrics = fs.readFileSync(file(`${out}/metrics.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    t.ok(metrics.some((m) => typeof m.val_accuracy === 'number'), 'metrics.jsonl has val_accuracy');

    const c = kiln(['classify', '--checkpoint', out, '--data', 'test.jsonl', '--json']);
    t.equal(c.code, 0, c.stderr);
    const report = JSON.parse(c.stdout);
    t.ok(report.accuracy >= 0.95, `${mode}: held-out accuracy ${report.accuracy}`);
    t.equal(report.labelled, 400);
    t.same(report.confusion.classes, ['sentence', 'sum']);
    const one = kiln(['classify', '--checkpoint', out, '--text', '7 - 2 = 5.']);
    t.match(one.stdout, /^sum \d+\.\d%  sentence \d+\.\d%\n$/, `${mode}: a sum is a sum: ${one.stdout}`);
    const table = kiln(['classify', '--checkpoint', out, '--data', 'test.jsonl', '--predictions', `${out}/pred.jsonl`]);
    t.match(table.stdout, /^accuracy \d+\.\d% \(\d+ of 400\)/);
    const preds = fs.readFileSync(file(`${out}/pred.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    t.equal(preds.length, 400);
    t.ok(preds.every((p) => ['sum', 'sentence'].includes(p.label) && Math.abs(p.probabilities.sum + p.probabilities.sentence - 1) < 1e-5));
  }
  fail(t, ['generate', '--checkpoint', 'cls-lora'], /holds a classifier .* use kiln classify/);
  fail(t, ['classify', '--checkpoint', 'base', '--text', 'hi'], /holds a language model, not a classifier/);
  fs.writeFileSync(file('other.jsonl'), '{"text": "a cat.", "label": "poem"}\n');
  fail(t, ['classify', '--checkpoint', 'cls-lora', '--data', 'other.jsonl'], /labels "poem" are not among the classifier's classes \(sentence, sum\)/);
});

t.test('LoRA language model: the loss falls, base weights stay bit-identical, a PEFT adapter is written, generate reads it', async (t) => {
  const r = kiln(['finetune', '--base', 'base', '--data', 'sums.txt', '--mode', 'lora', '--steps', '60', '--eval-interval', '30', '--out', 'lm-lora', ...quiet]);
  t.equal(r.code, 0, r.stderr);
  const m = /validation loss: ([\d.]+) -> ([\d.]+) nats\/char/.exec(r.stdout);
  t.ok(m && Number(m[2]) < Number(m[1]) - 0.05, `validation loss falls: ${m?.[0]}`);
  const base = weights('base/checkpoint.safetensors');
  const tuned = weights('lm-lora/checkpoint.safetensors');
  for (const [k, v] of base) t.ok(tuned.get(k)?.equals(v), `${k} unchanged`);
  t.ok([...tuned.keys()].some((k) => k.includes('inProjLora')), 'adapters in the checkpoint');
  const config = JSON.parse(fs.readFileSync(file('lm-lora/adapter/adapter_config.json'), 'utf8'));
  t.equal(config.peft_type, 'LORA');
  t.equal(config.r, 8);
  const g = kiln(['generate', '--checkpoint', 'lm-lora', '--prompt', '3 + ', '--max-tokens', '10', '--seed', '1']);
  t.equal(g.code, 0, g.stderr);
  t.match(g.stdout, /^3 \+ /);
  // A LoRA language model is a base for further fine-tuning: its adapters are merged into the weights.
  const again = kiln(['finetune', '--base', 'lm-lora', '--data', 'sums.txt', '--steps', '2', '--out', 'lm-again', ...quiet]);
  t.equal(again.code, 0, again.stderr);
  t.match(again.stdout, /LoRA \(merged\) fine-tuning of base/);
});

t.test('soft-prompt language model: the loss falls, the model stays bit-identical, generate uses the prompt', async (t) => {
  const r = kiln(['finetune', '--base', 'base', '--data', 'sums.txt', '--mode', 'prompt', '--prompt-tokens', '4', '--steps', '60', '--eval-interval', '30', '--out', 'lm-prompt', ...quiet]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /a soft prompt of 4 tokens; 128 of [\d.k]+ parameters trainable/);
  const m = /validation loss: ([\d.]+) -> ([\d.]+) nats\/char/.exec(r.stdout);
  t.ok(m && Number(m[2]) < Number(m[1]) - 0.05, `validation loss falls: ${m?.[0]}`);
  const base = weights('base/checkpoint.safetensors');
  const tuned = weights('lm-prompt/checkpoint.safetensors');
  for (const [k, v] of base) t.ok(tuned.get(`model.${k}`)?.equals(v), `${k} unchanged`);
  t.ok(tuned.has('prompt'), 'the prompt is in the checkpoint');
  const g = kiln(['generate', '--checkpoint', 'lm-prompt', '--prompt', '3 + ', '--max-tokens', '10', '--seed', '1']);
  t.equal(g.code, 0, g.stderr);
  t.match(g.stdout, /^3 \+ /);
  fail(t, ['finetune', '--data', 'sums.txt', '--out', 'never', '--base', 'lm-prompt', ...quiet], /--base lm-prompt is a prompt fine-tuning for language modelling/);
});

t.test('a resumed fine-tuning ends with the weights of an uninterrupted one', async (t) => {
  // A constant learning rate: a resumed run keeps the schedule it was planned with (10 steps here).
  const args = ['finetune', '--base', 'base', '--data', 'train.jsonl', '--task', 'classify', '--mode', 'lora', '--eval-interval', '10', '--warmup', '0', '--min-lr-ratio', '1', ...quiet];
  t.equal(kiln([...args, '--steps', '20', '--out', 'straight']).code, 0);
  t.equal(kiln([...args, '--steps', '10', '--out', 'resumed']).code, 0);
  const r = kiln([...args, '--steps', '20', '--out', 'resumed', '--resume']);
  t.equal(r.code, 0, r.stderr);
  const accuracy = summary('resumed').valAccuracy;
  t.equal(kiln([...args, '--steps', '20', '--out', 'resumed', '--resume']).code, 0, 'resuming a finished run');
  t.equal(summary('resumed').valAccuracy, accuracy, 'still reports the accuracy of its last evaluation');
  const a = weights('straight/checkpoint.safetensors'), b = weights('resumed/checkpoint.safetensors');
  t.same([...a.keys()].sort(), [...b.keys()].sort());
  for (const [k, v] of a) t.ok(b.get(k)!.equals(v), `${k} equal`);
  fail(t, ['finetune', '--base', 'base', '--data', 'train.jsonl', '--task', 'classify', '--mode', 'full', '--out', 'resumed', '--resume'], /--resume: .* holds another fine-tuning/);
});

t.test('a Hugging Face GPT-2 folder as base: full fine-tune, exported back in its layout', async (t) => {
  manualSeed(0);
  const hf = new GPT({ vocabSize: 50257, blockSize: 32, nLayer: 1, nHead: 2, nEmbd: 8 });
  hf.savePretrained(file('hf-base'));
  hf.dispose();
  const r = kiln(['finetune', '--base', 'hf-base', '--data', 'sums.txt', '--steps', '3', '--batch-size', '4', '--out', 'hf-tuned', ...quiet]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /base: Hugging Face GPT-2 folder hf-base/);
  t.match(r.stdout, /nats\/token/);
  const exported = GPT.fromPretrained(file('hf-tuned/hf'));
  const tuned = weights('hf-tuned/checkpoint.safetensors');
  for (const [k, v] of exported.stateDict()) {
    t.ok(Buffer.from((v.contiguous().dataSync() as Float32Array).buffer.slice(0)).equals(tuned.get(k)!), `${k} exported`);
    v.dispose();
  }
  exported.dispose();
  const g = kiln(['generate', '--checkpoint', 'hf-tuned', '--prompt', 'Hello', '--max-tokens', '3', '--seed', '0']);
  t.equal(g.code, 0, g.stderr);
});

t.test('bad inputs get one clear line', async (t) => {
  const ft = ['finetune', '--data', 'sums.txt', '--out', 'never', ...quiet];
  fail(t, ['finetune', '--data', 'sums.txt'], /--base is required/);
  fail(t, ['finetune', '--base', 'base'], /--data is required/);
  fail(t, [...ft, '--base', 'nope'], /--base: no such file or folder: nope/);
  fs.mkdirSync(file('not-a-model'));
  fs.writeFileSync(file('not-a-model/weights.bin'), 'x');
  fail(t, [...ft, '--base', 'not-a-model'], /neither a kiln run folder \(checkpoint.safetensors\) nor a Hugging Face GPT-2 folder/);
  // A Hugging Face folder whose config does not match its weights.
  fs.mkdirSync(file('hf-bad'));
  fs.copyFileSync(file('hf-base/model.safetensors'), file('hf-bad/model.safetensors'));
  const config = JSON.parse(fs.readFileSync(file('hf-base/config.json'), 'utf8'));
  fs.writeFileSync(file('hf-bad/config.json'), JSON.stringify({ ...config, n_layer: 2 }));
  fail(t, [...ft, '--base', 'hf-bad'], /^kiln finetune: FormatError: GPT.fromPretrained: .*model.safetensors does not match .*config.json \(n_layer 2, .*missing keys: blocks\.1\./, 1);
  fs.writeFileSync(file('hf-bad/config.json'), JSON.stringify({ ...config, n_embd: 16 }));
  fail(t, [...ft, '--base', 'hf-bad'], /^kiln finetune: FormatError: GPT.fromPretrained: .*does not match .*n_embd 16.*size mismatch for wte.weight: shape \[50257, 8\] in the state dict, \[50257, 16\] in the model/, 1);
  fs.mkdirSync(file('hf-half'));
  fs.copyFileSync(file('hf-base/config.json'), file('hf-half/config.json'));
  fail(t, [...ft, '--base', 'hf-half'], /^kiln finetune: ValueError: GPT.fromPretrained: hf-half has no model.safetensors/, 1);
  fs.writeFileSync(file('corrupt.safetensors'), Buffer.from([200, 0, 0, 0, 0, 0, 0, 0, 0x7b]));
  fail(t, [...ft, '--base', 'corrupt.safetensors'], /^kiln finetune: FormatError: .*truncated/, 1);
  fail(t, [...ft, '--base', 'cls-lora'], /--base cls-lora is a lora fine-tuning for classification/);
  fail(t, [...ft, '--base', 'base', '--data', 'nope.txt'], /no such file: nope.txt/);
  fail(t, [...ft, '--base', 'base', '--mode', 'lora', '--lora-targets', 'attn.qq'], /targets "attn.qq" match no Linear layer/);
  fail(t, [...ft, '--base', 'base', '--block-size', '500'], /--block-size 500 exceeds the base's context of 32/);
  fail(t, [...ft, '--base', 'base', '--mode', 'prompt', '--prompt-tokens', '40'], /--prompt-tokens 40 leaves no room/);
  const cls = ['finetune', '--base', 'base', '--task', 'classify', '--out', 'never', ...quiet];
  fs.writeFileSync(file('notjson.jsonl'), 'hello\n');
  fail(t, [...cls, '--data', 'notjson.jsonl'], /notjson.jsonl:1 is not a JSON object/);
  fs.writeFileSync(file('nolabel.jsonl'), '{"text": "a cat."}\n');
  fail(t, [...cls, '--data', 'nolabel.jsonl'], /nolabel.jsonl:1 has no field "label"/);
  fs.writeFileSync(file('oneclass.jsonl'), '{"text": "a cat.", "label": "x"}\n{"text": "a dog.", "label": "x"}\n');
  fail(t, [...cls, '--data', 'oneclass.jsonl'], /has one class \(x\)/);
  fs.writeFileSync(file('short.txt'), 'a cat sees a dog.');
  fail(t, [...ft, '--base', 'base', '--data', 'short.txt'], /short.txt has \d+ tokens/);
  fail(t, [...ft, '--base', 'base', '--mode', 'full', '--lora-rank', '4'], /--lora-rank applies to --mode lora only/);
  fail(t, [...ft, '--base', 'base', '--prompt-init', 'sum'], /--prompt-init applies to --mode prompt only/);
  fail(t, [...ft, '--base', 'base', '--max-length', '8'], /--max-length applies to --task classify only/);
  fail(t, [...ft, '--base', 'sums.txt'], /--base sums.txt is not a checkpoint/);
  t.notOk(fs.existsSync(file('never')), 'no output folder made');
  fail(t, ['finetune', '--base', 'base', '--data', 'sums.txt', '--out', 'base', ...quiet], /--out base is where the base model is/);
  fail(t, ['finetune', '--base', 'hf-base', '--data', 'sums.txt', '--out', 'hf-base', ...quiet], /--out hf-base is where the base model is/);
  fail(t, ['train', '--resume', '--out', 'cls-lora', ...quiet], /was written by kiln finetune; continue it with kiln finetune --resume/);
  fail(t, ['finetune', '--base', 'base', '--data', 'sums.txt', '--out', 'base-copy', '--resume', ...quiet], /no checkpoint to resume/);
  fail(t, ['classify', '--checkpoint', 'cls-lora'], /give either --text or --data/);
  fail(t, ['classify', '--checkpoint', 'cls-lora', '--data', 'test.jsonl', '--predictions', 'nodir/p.jsonl'], /--predictions: no such folder: nodir/);
  // A LoRA adapter on the tied lmHead cannot be merged into a base.
  t.equal(kiln(['finetune', '--base', 'base', '--data', 'sums.txt', '--mode', 'lora', '--lora-targets', 'lmHead,mlp.fc', '--steps', '2', '--out', 'lora-head', ...quiet]).code, 0);
  fail(t, ['finetune', '--base', 'lora-head', '--data', 'sums.txt', '--out', 'never', ...quiet], /--base lora-head: its LoRA adapters cannot be merged .*tied/);
});
