// The Trainer: gradient accumulation over k micro-batches equals one big batch (with clipping),
// memory stays flat from step to step, a run saved and resumed continues with the losses, validation
// losses and weights of an uninterrupted run (dropout, shuffling, schedule, accumulation included),
// epochs, callbacks and stop(), metrics.jsonl and loss.svg, and the errors.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { nn, optim } from '../../lib/index';
import { DataLoader, TensorDataset } from '../../lib/data/index';
import { FitResult, StepInfo, Trainer, lineChartSVG, niceTicks } from '../../lib/train/index';
import { randomTensor, values } from '../helpers/gradcheck';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-trainer-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const maxDiff = (a: number[], b: number[]) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
const weights = (m: nn.Module) => m.parameters().flatMap((p) => values(p.to('float64')));

class MLP extends nn.Module {
  fc1 = new nn.Linear(4, 8, { dtype: 'float64' });
  fc2 = new nn.Linear(8, 1, { dtype: 'float64' });
  override forward(x: Tensor): Tensor {
    return this.fc2.forward(this.fc1.forward(x).tanh());
  }
}

const mse = (m: nn.Module, [x, y]: Tensor[]) => nn.mseLoss(m.forward(x), y);

/** A tiny GPT with dropout on random token sequences of 9 (input 8, target 8). */
function lmSetup(seed: number, loaderSeed: number) {
  kiln.manualSeed(seed);
  const model = new nn.GPT({ vocabSize: 11, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 16, dropout: 0.1 });
  const optimizer = new optim.AdamW(model.parameters(), { lr: 0.01 });
  const seqs = kiln.tensor(Int32Array.from({ length: 48 * 9 }, (_, i) => (i * 7 + Math.floor(i / 9)) % 11), { shape: [48, 9], dtype: 'int64' });
  const valSeqs = kiln.tensor(Int32Array.from({ length: 16 * 9 }, (_, i) => (i * 3) % 11), { shape: [16, 9], dtype: 'int64' });
  return {
    model,
    optimizer,
    train: new DataLoader(new TensorDataset(seqs), { batchSize: 4, shuffle: true, seed: loaderSeed }),
    val: new DataLoader(new TensorDataset(valSeqs), { batchSize: 8 }),
  };
}
const lmLoss = (m: nn.Module, [s]: Tensor[]) => (m as nn.GPT).forward(s.narrow(1, 0, 8).contiguous(), s.narrow(1, 1, 8).contiguous()).loss!;

// First, while no garbage from other tests is waiting for the collector's safety net to free it.
t.test('memory stays flat from step to step, evaluation included', async (t) => {
  const s = lmSetup(1, 1);
  const live: number[] = [];
  const trainer = new Trainer<Tensor[]>({
    model: s.model, optimizer: s.optimizer, loss: lmLoss, gradAccumulation: 2, clipGradNorm: 1, evalInterval: 4, progress: 'none',
    callbacks: [{ onStepEnd: () => void live.push(kiln.memory().tensors) }],
  });
  const before = kiln.memory().tensors;
  await trainer.fit({ train: s.train, val: s.val, steps: 14 });
  t.same(live.slice(2), new Array(12).fill(live[2]), `live tensors after steps 3..14: ${live.slice(2).join(' ')}`);
  t.equal(kiln.memory().tensors - before, live[2] - before, 'nothing more left after fit()');
});

t.test('k micro-batches of accumulation equal one big batch', async (t) => {
  const x = randomTensor([16, 4], 1), y = randomTensor([16, 1], 2);
  const ds = new TensorDataset(x, y);
  async function run(batchSize: number, k: number): Promise<{ w: number[]; losses: number[] }> {
    kiln.manualSeed(3);
    const model = new MLP();
    const optimizer = new optim.AdamW(model.parameters(), { lr: 0.05 });
    const losses: number[] = [];
    const trainer = new Trainer<Tensor[]>({
      model, optimizer, loss: mse, gradAccumulation: k, clipGradNorm: 0.5, progress: 'none',
      callbacks: [{ onStepEnd: (_t, s) => void losses.push(s.loss) }],
    });
    const r = await trainer.fit({ train: new DataLoader(ds, { batchSize }), epochs: 3 });
    t.equal(r.step, 6, `batch ${batchSize} x ${k}: 3 epochs of 16 items are 6 steps`);
    return { w: weights(model), losses };
  }
  const big = await run(8, 1);
  for (const [b, k] of [[4, 2], [2, 4]]) {
    const acc = await run(b, k);
    t.ok(maxDiff(acc.losses, big.losses) < 1e-12, `batch ${b} x ${k}: step losses equal the big batch's`);
    t.ok(maxDiff(acc.w, big.w) < 1e-12, `batch ${b} x ${k}: weights equal after 6 steps (max diff ${maxDiff(acc.w, big.w)})`);
  }
  // Summing instead of averaging the micro-batches' gradients would not match.
  kiln.manualSeed(3);
  const model = new MLP();
  const trainer = new Trainer<Tensor[]>({
    model, optimizer: new optim.AdamW(model.parameters(), { lr: 0.05 }), loss: (m, b) => mse(m, b).mul(4), gradAccumulation: 4, clipGradNorm: 0.5, progress: 'none',
  });
  await trainer.fit({ train: new DataLoader(ds, { batchSize: 2 }), epochs: 3 });
  t.ok(maxDiff(weights(model), big.w) > 1e-4, 'a different gradient gives different weights (the comparison can fail)');
});

function lmTrainer(s: ReturnType<typeof lmSetup>, outDir: string | null, log: { losses: number[]; val: Array<[number, number]> }, crashAt = 0) {
  return new Trainer<Tensor[]>({
    model: s.model,
    optimizer: s.optimizer,
    loss: lmLoss,
    scheduler: (o, total) => new optim.WarmupCosineLR(o, { warmupSteps: 2, totalSteps: total, minLrRatio: 0.1 }),
    gradAccumulation: 2,
    clipGradNorm: 0.5,
    evalInterval: 3,
    checkpointInterval: 5,
    outDir,
    progress: 'none',
    callbacks: [{
      onStepEnd: (_t, i) => {
        log.losses.push(i.loss);
        if (i.step === crashAt) throw new Error('simulated crash');
      },
      onEval: (_t, e) => void log.val.push([e.step, e.valLoss]),
    }],
  });
}

t.test('a run resumed from its checkpoint continues exactly like an uninterrupted run', async (t) => {
  const whole = { losses: [] as number[], val: [] as Array<[number, number]> };
  const u = lmSetup(0, 5);
  await lmTrainer(u, null, whole).fit({ train: u.train, val: u.val, steps: 10 });
  t.equal(whole.losses.length, 10);

  // The first attempt saves a checkpoint at step 5 and crashes at step 7.
  const out = path.join(dir, 'resume');
  const first = { losses: [] as number[], val: [] as Array<[number, number]> };
  const p = lmSetup(0, 5);
  await t.rejects(lmTrainer(p, out, first, 7).fit({ train: p.train, val: p.val, steps: 10 }), /simulated crash/);
  t.same(first.losses, whole.losses.slice(0, 7), 'the same run up to the crash');
  const logged = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
  t.equal(Math.max(...logged), 6, 'the crashed run logged steps after its checkpoint (up to 6: step 7 crashed before its record)');

  const second = { losses: [] as number[], val: [] as Array<[number, number]> };
  const r = lmSetup(42, 99); // other initial weights and data seed: the checkpoint must restore them
  const res = await lmTrainer(r, out, second).fit({ train: r.train, val: r.val, steps: 10, resume: out });
  t.equal(res.step, 10);
  t.same(second.losses, whole.losses.slice(5), 'steps 6..10 have the uninterrupted run\'s losses');
  t.same([...first.val.filter(([step]) => step <= 5), ...second.val], whole.val, 'and its validation losses');
  t.same(weights(r.model), weights(u.model), 'and its final weights');
  t.notSame(whole.losses.slice(5), whole.losses.slice(0, 5), 'the losses change from step to step (the comparison can fail)');

  const records = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.same(records.filter((x) => 'loss' in x).map((x) => x.step), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'metrics.jsonl has every step once (the crashed steps replaced)');
  t.same(records.filter((x) => 'val_loss' in x).map((x) => x.step), [0, 3, 6, 9, 10], 'validation at the start, every 3 steps and at the end');
  t.same(records.filter((x) => 'loss' in x).map((x) => x.loss), whole.losses, 'with the losses of the uninterrupted run');
  for (const rec of records.filter((x) => 'loss' in x)) {
    t.ok(rec.lr > 0 && rec.tokens_per_s > 0 && rec.elapsed_s >= 0 && rec.grad_norm >= 0, `step ${rec.step} has lr, tokens/s, elapsed, grad norm`);
  }
  const svg = fs.readFileSync(path.join(out, 'loss.svg'), 'utf8');
  t.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  t.match(svg, /validation loss/);
  t.equal((svg.match(/<polyline /g) ?? []).length, 3, 'per-step, smoothed and validation curves');
  t.equal((svg.match(/<circle /g) ?? []).length, 5, 'a marker per validation loss');
  t.notMatch(svg, /<script|href=/, 'self-contained');
});

t.test('callbacks, stop(), full-batch arrays, samplers and the default loss', async (t) => {
  kiln.manualSeed(2);
  const model = new nn.GPT({ vocabSize: 11, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 8 });
  const events: string[] = [];
  let drawn = 0;
  const sampler = {
    sample: () => {
      drawn++;
      return kiln.tidy(() => {
        const s = kiln.randint(0, 11, [2, 9]);
        return [s.narrow(1, 0, 8).contiguous(), s.narrow(1, 1, 8).contiguous()];
      });
    },
  };
  const out = path.join(dir, 'stop');
  let result: FitResult | null = null;
  const trainer: Trainer<Tensor[]> = new Trainer<Tensor[]>({
    model, optimizer: new optim.SGD(model.parameters(), { lr: 0.1 }), evalBatches: 2, outDir: out, progress: 'none',
    callbacks: [{
      onFitStart: (_t, i) => void events.push(`start ${i.step}/${i.totalSteps}`),
      onStepEnd: (tr, i: StepInfo) => {
        events.push(`step ${i.step}`);
        t.equal(i.tokens, 16, 'tokens: numel of the token ids');
        if (i.step === 3) tr.stop();
      },
      onEval: (_t, e) => void events.push(`eval ${e.step}`),
      onCheckpoint: (_t, c) => void events.push(`checkpoint ${c.step}`),
      onFitEnd: async (_t, r) => {
        await new Promise((res) => setTimeout(res, 1));
        result = r;
        events.push('end');
      },
    }],
  });
  const before = kiln.memory().tensors;
  const r = await trainer.fit({ train: sampler, val: sampler, steps: 100 });
  t.same(events, ['start 0/100', 'eval 0', 'step 1', 'step 2', 'step 3', 'checkpoint 3', 'end'], 'events in order; stop() ends the run with a checkpoint');
  t.equal(result, r);
  t.ok(r.stopped);
  t.equal(r.step, 3);
  t.equal(drawn, 2 + 3, 'two validation batches, three training batches');
  t.ok(fs.existsSync(path.join(out, 'checkpoint.safetensors')));
  // The collector may free tensors that earlier tests left to it, never add any: no growth.
  t.ok(kiln.memory().tensors <= before, 'sampled batches were disposed');

  // An array of batches: full-batch training, the batches stay the caller's.
  const x = randomTensor([6, 4], 5), y = randomTensor([6, 1], 6);
  const mlp = new MLP();
  const fullBatch = new Trainer<Tensor[]>({ model: mlp, optimizer: new optim.SGD(mlp.parameters(), { lr: 0.1 }), loss: mse, progress: 'none' });
  const fr = await fullBatch.fit({ train: [[x, y]], val: [[x, y]], epochs: 5 });
  t.equal(fr.step, 5);
  t.ok(fr.valLoss! < fr.initialValLoss!, `full-batch loss falls: ${fr.initialValLoss} -> ${fr.valLoss}`);
  t.notOk(x.isDisposed || y.isDisposed, 'array batches are not disposed');
});

t.test('errors', async (t) => {
  const mlp = new MLP();
  const opt = new optim.SGD(mlp.parameters(), { lr: 0.1 });
  t.throws(() => new Trainer({ model: mlp, optimizer: opt, gradAccumulation: 0 }), kiln.ValueError);
  t.throws(() => new Trainer({ model: mlp, optimizer: opt, clipGradNorm: -1 }), kiln.ValueError);
  const tr = new Trainer<Tensor[]>({ model: mlp, optimizer: opt, loss: mse, progress: 'none' });
  const x = randomTensor([4, 4], 1), y = randomTensor([4, 1], 2);
  await t.rejects(tr.fit({ train: [[x, y]] }), kiln.ValueError, 'needs steps or epochs');
  await t.rejects(tr.fit({ train: { sample: () => [x, y] }, epochs: 1 }), /known length/);
  await t.rejects(tr.fit({ train: [[x, y]], val: { sample: () => [x, y] }, steps: 1 }), /evalBatches/);
  await t.rejects(tr.fit({ train: [], steps: 1 }), /yielded no batches/);
  const nan = new Trainer<Tensor[]>({ model: mlp, optimizer: opt, loss: (m, b) => mse(m, b).mul(NaN), progress: 'none' });
  await t.rejects(nan.fit({ train: [[x, y]], steps: 2 }), /loss became NaN at step 1/);
  const noLoss = new Trainer<Tensor[]>({ model: mlp, optimizer: opt, progress: 'none' });
  await t.rejects(noLoss.fit({ train: [[x]], steps: 1 }), /floating point tensor with one element/, 'forward gave predictions, not a loss');
  const gptNoTargets = new nn.GPT({ vocabSize: 5, blockSize: 4, nLayer: 1, nHead: 1, nEmbd: 4 });
  const noTargets = new Trainer<Tensor[]>({ model: gptNoTargets, optimizer: new optim.SGD(gptNoTargets.parameters()), progress: 'none' });
  await t.rejects(noTargets.fit({ train: [[kiln.tensor([[1, 2]])]], steps: 1 }), /neither a loss tensor nor an object with one/);
  const corrupt = path.join(dir, 'corrupt.safetensors');
  fs.writeFileSync(corrupt, Buffer.from([8, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d]));
  await t.rejects(tr.fit({ train: [[x, y]], steps: 1, resume: corrupt }), kiln.FormatError, 'a corrupt checkpoint');
});

t.test('loss-curve chart pieces', async (t) => {
  t.same(niceTicks(0, 1, 6), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  t.same(niceTicks(0, 600, 6), [0, 200, 400, 600]);
  t.same(niceTicks(0.3, 3.9, 6), [1, 2, 3]);
  t.same(niceTicks(0.55, 0.62, 6), [0.56, 0.58, 0.6, 0.62]);
  t.same(niceTicks(3, 3), [3]);
  const svg = lineChartSVG([{ name: 'a < b & "c"', points: [[0, 1], [1, NaN], [2, 0.5]], color: '#000' }], { title: 'T' });
  t.match(svg, /a &lt; b &amp; &quot;c&quot;/, 'text is escaped');
  t.match(svg, /points="[\d.]+,[\d.]+ [\d.]+,[\d.]+"/, 'non-finite points are skipped');
});
