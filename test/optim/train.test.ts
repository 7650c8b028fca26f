// The pieces together: a character bigram model (nn.Embedding + crossEntropy) trained on windows
// sampled from a token file with AdamW, warmup + cosine lr and gradient clipping; the loss falls
// well below its starting value, memory stays flat, and a resumed run continues identically.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib/index';
import { nn, optim } from '../../lib/index';
import { CharTokenizer, TokenFileDataset, tokenizeFile } from '../../lib/data/index';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-train-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

t.test('a bigram model learns from a token file', async (t) => {
  const text = 'the cat sat on the mat. the dog sat on the log. '.repeat(40);
  fs.writeFileSync(path.join(dir, 'text.txt'), text);
  const tok = CharTokenizer.fromText(text);
  await tokenizeFile(path.join(dir, 'text.txt'), path.join(dir, 'text.tok'), tok);
  const V = tok.vocabSize;

  function setup(seed: number) {
    const model = new nn.Embedding(V, V);
    const opt = new optim.AdamW(model.parameters(), { lr: 0.1, weightDecay: 0.01 });
    const sched = new optim.WarmupCosineLR(opt, { warmupSteps: 5, totalSteps: 60, minLrRatio: 0.1 });
    const data = new TokenFileDataset(path.join(dir, 'text.tok'), { blockSize: 16, seed });
    return { model, opt, sched, data };
  }
  function trainStep(s: ReturnType<typeof setup>): number {
    const loss = kiln.tidy(() => {
      const [x, y] = s.data.sampleBatch(8);
      const logits = s.model.forward(x);
      const l = nn.crossEntropy(logits.reshape(-1, V), y.reshape(-1));
      l.backward();
      return l.item();
    });
    optim.clipGradNorm(s.model.parameters(), 1.0).dispose();
    s.opt.step();
    s.opt.zeroGrad();
    s.sched.step();
    return loss;
  }

  const run = setup(1);
  const losses: number[] = [];
  for (let i = 0; i < 30; i++) losses.push(trainStep(run));
  const before = kiln.memory();
  for (let i = 30; i < 40; i++) losses.push(trainStep(run));
  t.equal(kiln.memory().tensors, before.tensors, 'no tensors leak per step');
  t.ok(losses[0] > Math.log(V) * 0.8, `starts no better than chance (${losses[0].toFixed(3)}; log V = ${Math.log(V).toFixed(3)})`);
  const late = losses.slice(-5).reduce((a, b) => a + b) / 5;
  t.ok(late < losses[0] * 0.6, `the loss falls: ${losses[0].toFixed(3)} -> ${late.toFixed(3)}`);

  // Checkpoint after 40 steps, resume in a fresh setup, and compare the next 10 steps.
  const ckpt = {
    weights: run.model.weight.to('float64').dataSync(),
    opt: run.opt.stateDict(),
    sched: run.sched.stateDict(),
    data: run.data.stateDict(),
  };
  const resumed = setup(2);
  kiln.noGrad(() => resumed.model.weight.copy_(kiln.tensor(ckpt.weights as Float64Array, { shape: [V, V], dtype: 'float64' })));
  resumed.opt.loadStateDict(ckpt.opt);
  resumed.sched.loadStateDict(ckpt.sched);
  resumed.data.loadStateDict(ckpt.data);
  const a = Array.from({ length: 10 }, () => trainStep(run));
  const b = Array.from({ length: 10 }, () => trainStep(resumed));
  t.same(b, a, 'the resumed run takes the same steps');
  t.same(Array.from(resumed.model.weight.dataSync()), Array.from(run.model.weight.dataSync()), 'and ends with the same weights');
  run.data.close();
  resumed.data.close();
});
