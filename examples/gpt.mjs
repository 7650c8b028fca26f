// A GPT language model, end to end: generate the toy language that `kiln train` uses (sentences with
// agreement rules, digit sums), tokenize it by characters into token files, train with the Trainer
// (AdamW, warmup + cosine schedule, clipping, validation, checkpoint, loss curve) and sample.
// Run (after `npm install`): node examples/gpt.mjs [--steps 600] [--out gpt-run]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as kiln from 'kiln';

const { nn, optim, data, train } = kiln;
const { values: args } = parseArgs({ options: { steps: { type: 'string', default: '600' }, out: { type: 'string', default: 'gpt-run' } } });
fs.mkdirSync(args.out, { recursive: true });
kiln.manualSeed(0);

// The corpus: 90% to train on, 10% to validate on.
const text = train.toyCorpus({ lines: 20000 });
const tokenizer = data.CharTokenizer.fromText(text);
const ids = tokenizer.encode(text);
const cut = Math.floor(ids.length * 0.9);
data.writeTokenFile(path.join(args.out, 'train.tok'), ids.slice(0, cut), { vocabSize: tokenizer.vocabSize });
data.writeTokenFile(path.join(args.out, 'val.tok'), ids.slice(cut), { vocabSize: tokenizer.vocabSize });
const blockSize = 32;
const trainWindows = new data.TokenFileDataset(path.join(args.out, 'train.tok'), { blockSize, seed: 1 });
const valWindows = new data.TokenFileDataset(path.join(args.out, 'val.tok'), { blockSize });

const model = new nn.GPT({ vocabSize: tokenizer.vocabSize, blockSize, nLayer: 2, nHead: 4, nEmbd: 64 });
const sample = (prompt, n = 40) => {
  const out = model.generate(kiln.tensor([tokenizer.encode(prompt)]), n, { temperature: 0.8 });
  const s = tokenizer.decode(Array.from(out.dataSync(), Number));
  out.dispose();
  return s.split('\n')[0];
};
const prompts = ['the cat ', 'two ', 'an ', '4 + 3 ='];
console.log(`${model.numParameters()} parameters; before training:`);
for (const p of prompts) console.log(`  ${sample(p)}`);

const trainer = new train.Trainer({
  model,
  optimizer: new optim.AdamW(model.parameters(), { lr: 6e-3, betas: [0.9, 0.99], weightDecay: 0.1 }),
  scheduler: (o, total) => new optim.WarmupCosineLR(o, { warmupSteps: 30, totalSteps: total, minLrRatio: 0.1 }),
  clipGradNorm: 1,
  evalInterval: 100,
  evalBatches: 20,
  outDir: args.out,
  logInterval: 50,
  unit: 'char', // one token per character: losses in nats/char, throughput in chars/s
  title: 'GPT on the toy language',
});
// model.forward(input, target) returns {logits, loss}: the Trainer's default loss takes it.
const result = await trainer.fit({
  train: train.windowSampler(trainWindows, 32),
  val: new data.DataLoader(valWindows, { batchSize: 32 }),
  steps: Number(args.steps),
});

console.log('after training:');
for (const p of prompts) {
  const line = sample(p);
  console.log(`  ${train.checkToyLine(line).valid ? 'ok ' : 'bad'} ${line}`);
}
console.log(`validation loss ${result.initialValLoss.toFixed(3)} -> ${result.valLoss.toFixed(3)} nats/char at ${Math.round(result.throughput)} chars/s`);
console.log(`loss curve: ${path.join(args.out, 'loss.svg')}; checkpoint: ${result.checkpoint}`);
trainWindows.close();
valWindows.close();
