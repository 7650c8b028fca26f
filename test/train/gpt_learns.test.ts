// A small GPT trained with the Trainer on the generated toy language (the data of `kiln train`):
// the validation loss starts near chance and falls below a bound that a model must learn the
// language's spelling and word order to reach, and sampled lines start to follow its rules.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib/index';
import { nn, optim } from '../../lib/index';
import { CharTokenizer, DataLoader, TokenFileDataset, writeTokenFile } from '../../lib/data/index';
import { Trainer, scoreToyText, toyCorpus, unigramEntropy, windowSampler } from '../../lib/train/index';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-gpt-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The bound: well under what character frequencies alone give (about 3.16 nats/char). */
const BOUND = 0.95;

t.test(`a GPT's validation loss on the toy language falls below ${BOUND} nats/char`, async (t) => {
  const text = toyCorpus({ lines: 6000, seed: 5 });
  const tok = CharTokenizer.fromText(text);
  const ids = tok.encode(text);
  const cut = Math.floor(ids.length * 0.9);
  writeTokenFile(path.join(dir, 'train.tok'), ids.slice(0, cut), { vocabSize: tok.vocabSize });
  writeTokenFile(path.join(dir, 'val.tok'), ids.slice(cut), { vocabSize: tok.vocabSize });
  const trainData = new TokenFileDataset(path.join(dir, 'train.tok'), { blockSize: 32, seed: 1 });
  const valData = new TokenFileDataset(path.join(dir, 'val.tok'), { blockSize: 32 });

  kiln.manualSeed(0);
  const model = new nn.GPT({ vocabSize: tok.vocabSize, blockSize: 32, nLayer: 2, nHead: 4, nEmbd: 48 });
  const optimizer = new optim.AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0.01, betas: [0.9, 0.99] });
  const trainer = new Trainer({
    model,
    optimizer,
    scheduler: (o, total) => new optim.WarmupCosineLR(o, { warmupSteps: 15, totalSteps: total, minLrRatio: 0.1 }),
    clipGradNorm: 1,
    evalBatches: 10,
    progress: 'none',
  });
  const r = await trainer.fit({ train: windowSampler(trainData, 16), val: new DataLoader(valData, { batchSize: 16 }), steps: 400 });
  const chance = Math.log(tok.vocabSize);
  t.ok(Math.abs(r.initialValLoss! - chance) < 0.3, `starts at chance: ${r.initialValLoss!.toFixed(3)} (log V = ${chance.toFixed(3)})`);
  t.ok(r.valLoss! < BOUND, `validation loss ${r.valLoss!.toFixed(3)} < ${BOUND} (character frequencies alone: ${unigramEntropy(text).toFixed(3)}) in ${r.elapsed.toFixed(1)} s`);

  const out = model.generate(kiln.tensor([tok.encode('\n')]), 200, { temperature: 0.5 });
  const sample = tok.decode(Array.from(out.dataSync() as BigInt64Array, Number));
  const words = (x: string) => x.split(/[\s.]+/).filter((w) => w);
  const known = new Set(words(text));
  const sampled = words(sample).slice(0, -1); // the last word may be cut off
  const spelled = sampled.filter((w) => known.has(w)).length / sampled.length;
  t.ok(spelled > 0.8, `${(100 * spelled).toFixed(0)}% of the sampled words are words of the language:\n${sample}`);
  const s = scoreToyText(sample.slice(1));
  t.ok(s.validSentences >= 1, `some sampled sentences follow all the rules: ${s.validSentences} of ${s.sentences}`);
  out.dispose();
  trainData.close();
  valData.close();
});
