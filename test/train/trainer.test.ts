// The Trainer: gradient accumulation over k micro-batches equals one big batch (with clipping),
// memory stays flat from step to step, a run saved and resumed continues with the losses, validation
// losses and weights of an uninterrupted run (dropout, shuffling, schedule, accumulation included),
// epochs, callbacks and stop(), metrics.jsonl and loss.svg, and the errors.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Writable } from 'stream';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { nn, optim } from '../../lib/index';
import { DataLoader, TensorDataset } from '../../lib/data/index';
import { FitResult, StepInfo, TrainStrategy, Trainer, lineChartSVG } from '../../lib/train/index';
import { niceTicks } from '../../lib/train/plot';
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

const mse = (m: MLP, [x, y]: Tensor[]) => nn.mseLoss(m.forward(x), y);

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
const lmLoss = (m: nn.GPT, [s]: Tensor[]) => m.forward(s.narrow(1, 0, 8).contiguous(), s.narrow(1, 1, 8).contiguous()).loss!;

// First, while no garbage from other tests is waiting for the collector's safety net to free it.
t.test('memory stays flat from step to step, evaluation included', async (t) => {
  const s = lmSetup(1, 1);
  const live: number[] = [];
  const trainer = new Trainer({
    model: s.model, optimizer: s.optimizer, gradAccumulation: 2, clipGradNorm: 1, evalInterval: 4, progress: 'none',
    callbacks: [{ onStepEnd: () => void live.push(kiln.memory().tensors) }],
  });
  const before = kiln.memory().tensors;
  await trainer.fit({ train: s.train, val: s.val, loss: lmLoss, steps: 14 });
  t.same(live.slice(2), new Array(12).fill(live[2]), `live tensors after steps 3..14: ${live.slice(2).join(' ')}`);
  // At onStepEnd the step's loss (two handles: the history's and the stop agreement's) and gradient
  // norm are still on the device.
  t.equal(kiln.memory().tensors - before, live[2] - 3 - before, 'nothing more left after fit() (the last step\'s loss and norm read and freed)');
});

t.test('k micro-batches of accumulation equal one big batch', async (t) => {
  const x = randomTensor([16, 4], 1), y = randomTensor([16, 1], 2);
  const ds = new TensorDataset(x, y);
  async function run(batchSize: number, k: number): Promise<{ w: number[]; losses: number[] }> {
    kiln.manualSeed(3);
    const model = new MLP();
    const optimizer = new optim.AdamW(model.parameters(), { lr: 0.05 });
    const losses: number[] = [];
    const trainer = new Trainer({
      model, optimizer, gradAccumulation: k, clipGradNorm: 0.5, progress: 'none',
      callbacks: [{ onStepEnd: (_t, s) => void losses.push(s.loss) }],
    });
    const r = await trainer.fit({ train: new DataLoader(ds, { batchSize }), loss: mse, epochs: 3 });
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
  const trainer = new Trainer({
    model, optimizer: new optim.AdamW(model.parameters(), { lr: 0.05 }), gradAccumulation: 4, clipGradNorm: 0.5, progress: 'none',
  });
  await trainer.fit({ train: new DataLoader(ds, { batchSize: 2 }), loss: (m, b) => mse(m, b).mul(4), epochs: 3 });
  t.ok(maxDiff(weights(model), big.w) > 1e-4, 'a different gradient gives different weights (the comparison can fail)');
});

function lmTrainer(s: ReturnType<typeof lmSetup>, outDir: string | null, log: { losses: number[]; val: Array<[number, number]> }, crashAt = 0) {
  return new Trainer({
    model: s.model,
    optimizer: s.optimizer,
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
  await lmTrainer(u, null, whole).fit({ train: u.train, val: u.val, loss: lmLoss, steps: 10 });
  t.equal(whole.losses.length, 10);

  // The first attempt saves a checkpoint at step 5 and crashes at step 7.
  const out = path.join(dir, 'resume');
  const first = { losses: [] as number[], val: [] as Array<[number, number]> };
  const p = lmSetup(0, 5);
  await t.rejects(lmTrainer(p, out, first, 7).fit({ train: p.train, val: p.val, loss: lmLoss, steps: 10 }), /simulated crash/);
  t.same(first.losses, whole.losses.slice(0, 7), 'the same run up to the crash');
  const logged = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
  t.equal(Math.max(...logged), 6, 'the crashed run logged steps after its checkpoint (up to 6: step 7 crashed before its record)');

  const second = { losses: [] as number[], val: [] as Array<[number, number]> };
  const r = lmSetup(42, 99); // other initial weights and data seed: the checkpoint must restore them
  const res = await lmTrainer(r, out, second).fit({ train: r.train, val: r.val, loss: lmLoss, steps: 10, resume: out });
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
    t.notOk('samples_per_s' in rec, 'a language model counts tokens, not samples');
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
  const trainer: Trainer<nn.GPT> = new Trainer({
    model, optimizer: new optim.SGD(model.parameters(), { lr: 0.1 }), evalBatches: 2, outDir: out, progress: 'none',
    callbacks: [{
      onFitStart: (_t, i) => void events.push(`start ${i.step}/${i.totalSteps}`),
      onStepEnd: (tr, i: StepInfo) => {
        events.push(`step ${i.step}`);
        t.equal(i.count, 16, 'tokens: numel of the token ids');
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
  const fullBatch = new Trainer({ model: mlp, optimizer: new optim.SGD(mlp.parameters(), { lr: 0.1 }), progress: 'none' });
  const fr = await fullBatch.fit({ train: [[x, y]], val: [[x, y]], loss: mse, epochs: 5 });
  t.equal(fr.step, 5);
  t.ok(fr.valLoss! < fr.initialValLoss!, `full-batch loss falls: ${fr.initialValLoss} -> ${fr.valLoss}`);
  t.notOk(x.isDisposed || y.isDisposed, 'array batches are not disposed');
});

/** A stream collecting what is written to it (progress output). */
function collector(): NodeJS.WritableStream & { text: string } {
  const w = new Writable({
    write(chunk, _enc, done) {
      w.text += String(chunk);
      done();
    },
  }) as Writable & { text: string };
  w.text = '';
  return w;
}

t.test('labels fit the task: tokens and nats for language models, samples and a plain loss otherwise', async (t) => {
  const x = randomTensor([8, 4], 3), y = randomTensor([8, 1], 4);
  const mlp = new MLP();
  const regression = collector();
  const out = path.join(dir, 'units');
  const r = await new Trainer({ model: mlp, optimizer: new optim.SGD(mlp.parameters(), { lr: 0.1 }), progress: 'log', progressStream: regression, outDir: out })
    .fit({ train: new DataLoader(new TensorDataset(x, y), { batchSize: 4 }), val: [[x, y]], loss: mse, steps: 2 });
  t.equal(r.unit, 'sample', 'float inputs: samples');
  t.match(regression.text, /step 0: val loss \d\.\d{4}\n/, 'a plain validation loss');
  t.match(regression.text, /step 2\/2 \| loss \d\.\d{4} \| val \d\.\d{4} \| lr [\d.e+-]+ \| [\d.k]+ samples\/s \|/);
  t.notMatch(regression.text, /nats|tok/, 'no tokens or nats');
  const records = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((rec) => 'loss' in rec);
  t.ok(records.length === 2 && records.every((rec) => rec.samples_per_s > 0 && !('tokens_per_s' in rec)), 'metrics.jsonl: samples_per_s');
  t.match(fs.readFileSync(path.join(out, 'loss.svg'), 'utf8'), />loss \(log scale\)</, 'chart axis: loss');

  const s = lmSetup(3, 3);
  const lm = collector();
  const lr = await new Trainer({ model: s.model, optimizer: s.optimizer, progress: 'log', progressStream: lm, outDir: out })
    .fit({ train: s.train, val: s.val, loss: lmLoss, steps: 2 });
  t.equal(lr.unit, 'token', 'token ids: tokens');
  t.match(lm.text, /step 0: val loss \d\.\d{4} nats\/token\n/);
  t.match(lm.text, /step 2\/2 \| loss \d\.\d{4} nats\/token \| .* \| [\d.k]+ tokens\/s \|/);
  t.match(fs.readFileSync(path.join(out, 'loss.svg'), 'utf8'), />loss \(nats\/token, log scale\)</);

  const chars = collector();
  const cr = await new Trainer({ model: s.model, optimizer: s.optimizer, progress: 'log', progressStream: chars, unit: 'char' })
    .fit({ train: s.train, loss: lmLoss, steps: 1 });
  t.equal(cr.unit, 'char');
  t.match(chars.text, /loss \d\.\d{4} nats\/char .* chars\/s/);
  const counted = await new Trainer({ model: s.model, optimizer: s.optimizer, progress: 'none', unit: 'sample' })
    .fit({ train: s.train, loss: lmLoss, steps: 1, countBatch: ([b]) => b.shape[0] * 1000 });
  t.ok(counted.throughput > 1000, 'countBatch counts the units');
  s.model.dispose();
});

t.test('resuming with more steps keeps the LR schedule the run was planned with, and says so first', async (t) => {
  const out = path.join(dir, 'longer');
  const planned: number[] = [];
  async function run(steps: number, resume: string | null): Promise<{ lrs: number[]; progress: string }> {
    const s = lmSetup(0, 5);
    const lrs: number[] = [];
    const progress = collector();
    const trainer = new Trainer({
      model: s.model,
      optimizer: s.optimizer,
      scheduler: (o, total) => {
        planned.push(total);
        return new optim.WarmupCosineLR(o, { warmupSteps: 2, totalSteps: total, minLrRatio: 0.1 });
      },
      outDir: out,
      progress: 'log',
      progressStream: progress,
      callbacks: [{ onStepEnd: (_t, i) => void lrs.push(i.lr) }],
    });
    await trainer.fit({ train: s.train, loss: lmLoss, steps, resume });
    s.model.dispose();
    return { lrs, progress: progress.text };
  }
  const first = await run(6, null);
  const longer = await run(10, out);
  t.same(planned, [6, 6], 'the schedule factory gets the 6 planned steps again on resume');
  t.equal(longer.progress.split('\n')[0], 'resumed from step 6; training to step 10; the LR schedule keeps its plan of 6 steps (not re-planned for 10)');
  t.same(longer.lrs, new Array(4).fill(0.001), 'steps 7..10 stay at the minimum lr of the 6-step schedule (0.1 x 0.01)');
  t.ok(first.lrs[5] > 0.001, 'the first run was still decaying at step 6 (the comparison can fail)');
  const same = await run(12, out);
  t.equal(same.progress.split('\n')[0], 'resumed from step 10; training to step 12; the LR schedule keeps its plan of 6 steps (not re-planned for 12)', 'a second resume keeps the first plan');
});

t.test('errors', async (t) => {
  const mlp = new MLP();
  const opt = new optim.SGD(mlp.parameters(), { lr: 0.1 });
  t.throws(() => new Trainer({ model: mlp, optimizer: opt, gradAccumulation: 0 }), kiln.ValueError);
  t.throws(() => new Trainer({ model: mlp, optimizer: opt, clipGradNorm: -1 }), kiln.ValueError);
  t.throws(() => new Trainer({ model: mlp, optimizer: opt, loss: mse } as never), /loss is an option of fit\(\) now/, 'the loss moved to fit()');
  t.throws(() => new Trainer({ model: mlp, optimizer: opt, unit: 'tokens' as never }), /unit must be 'token', 'char' or 'sample', got tokens/);
  t.throws(() => new Trainer({ model: mlp, optimizer: opt, device: 'gpu' }), kiln.DeviceError);
  t.throws(
    () => new Trainer({ model: mlp, optimizer: opt, device: 'cuda' }),
    { name: 'DeviceError', message: /device is cuda:0 but the model's parameters are on cpu; call model.to\('cuda:0'\) first/ },
  );
  const tr = new Trainer({ model: mlp, optimizer: opt, progress: 'none' });
  const x = randomTensor([4, 4], 1), y = randomTensor([4, 1], 2);
  t.throws(() => tr.evaluate([[x, y]], 2 as never), { name: 'ValueError', message: /options must be an object, e\.g\. evaluate\(val, \{ maxBatches: 2 \}\)/ });
  await t.rejects(tr.fit({ train: [[x, y]], loss: mse }), kiln.ValueError, 'needs steps or epochs');
  await t.rejects(tr.fit({ train: { sample: () => [x, y] }, loss: mse, epochs: 1 }), /known length/);
  await t.rejects(tr.fit({ train: [[x, y]], val: { sample: () => [x, y] }, loss: mse, steps: 1 }), /evalBatches/);
  await t.rejects(tr.fit({ train: [], loss: mse, steps: 1 }), /yielded no batches/);
  await t.rejects(tr.fit({ train: [[x, y]], loss: (m, b) => mse(m, b).mul(NaN), steps: 2 }), /loss became NaN at step 1/);
  await t.rejects(tr.fit({ train: [[x]], steps: 1 }), /floating point tensor with one element/, 'forward gave predictions, not a loss');
  const gptNoTargets = new nn.GPT({ vocabSize: 5, blockSize: 4, nLayer: 1, nHead: 1, nEmbd: 4 });
  const noTargets = new Trainer({ model: gptNoTargets, optimizer: new optim.SGD(gptNoTargets.parameters()), progress: 'none' });
  await t.rejects(noTargets.fit({ train: [[kiln.tensor([[1, 2]])]], steps: 1 }), /neither a loss tensor nor an object with one/);
  const corrupt = path.join(dir, 'corrupt.safetensors');
  fs.writeFileSync(corrupt, Buffer.from([8, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d]));
  await t.rejects(tr.fit({ train: [[x, y]], loss: mse, steps: 1, resume: corrupt }), kiln.FormatError, 'a corrupt checkpoint');
  // A well-formed file whose optimizer state lost a parameter's step: an error naming the file and the entry.
  const runDir = path.join(dir, 'adam-run');
  const fresh = new MLP();   // mlp's weights are NaN after the test above
  const adam = () => new optim.Adam(fresh.parameters(), { lr: 1e-3 });
  await new Trainer({ model: fresh, optimizer: adam(), progress: 'none', outDir: runDir }).fit({ train: [[x, y]], loss: mse, steps: 1 });
  const c = kiln.io.readCheckpoint(path.join(runDir, 'checkpoint.safetensors'));
  const osd = c.optimizer!;
  delete (osd.state[0] as Record<string, unknown>).step;
  const noStep = path.join(dir, 'no-step.safetensors');
  kiln.io.saveCheckpoint(noStep, { model: c.weights, optimizer: { stateDict: () => osd } as never, state: c.state });
  kiln.io.disposeCheckpoint(c);
  await t.rejects(
    new Trainer({ model: fresh, optimizer: adam(), progress: 'none' }).fit({ train: [[x, y]], loss: mse, steps: 2, resume: noStep }),
    { name: 'FormatError', message: /no-step\.safetensors: invalid saved state: .*step/ },
    'a checkpoint with broken optimizer state',
  );
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

t.test('a one-element loss of shape [1] trains with clipping; step infos copy and serialize like plain objects', async (t) => {
  kiln.manualSeed(0);
  const model = new nn.Linear(3, 1);
  const batches = { sample: () => [kiln.randn([4, 3]), kiln.randn([4, 1])] };
  const seen: StepInfo[] = [], json: string[] = [];
  const trainer = new Trainer({
    model, optimizer: new optim.SGD(model.parameters(), { lr: 0.01 }), clipGradNorm: 1, progress: 'none',
    callbacks: [{ onStepEnd: (_t, info) => { seen.push({ ...info }); json.push(JSON.stringify(info)); } }],
  });
  const r = await trainer.fit({ train: batches, steps: 2, loss: (m, [x, y]) => m.forward(x).sub(y).square().mean(0) });
  t.ok(Number.isFinite(r.trainLoss), `trained (loss ${r.trainLoss.toFixed(4)})`);
  t.equal(seen.length, 2);
  t.ok(typeof seen[0].loss === 'number' && Number.isFinite(seen[0].loss), 'a spread copy holds the loss');
  t.ok(typeof seen[0].gradNorm === 'number', 'and the gradient norm');
  t.same(Object.keys(JSON.parse(json[1])).sort(), ['count', 'elapsed', 'gradNorm', 'loss', 'lr', 'step', 'throughput']);
  t.equal(JSON.parse(json[1]).loss, seen[1].loss, 'JSON.stringify(info) carries the loss');
});

t.test('evalMetrics: weighted means over the validation batches, in onEval, metrics.jsonl, the progress and the result', async (t) => {
  const mlp = new MLP();
  const x = randomTensor([6, 4], 5), y = randomTensor([6, 1], 6);
  // Batches of 4 and 2 rows; the metric is each batch's mean of x[:, 0], so the weighted mean is the mean over all rows.
  const val = new DataLoader(new TensorDataset(x, y), { batchSize: 4 });
  const expected = values(x.narrow(1, 0, 1)).reduce((a, b) => a + b, 0) / 6;
  const out = path.join(dir, 'eval-metrics');
  const seen: Array<Record<string, number>> = [];
  const progress = collector();
  const r = await new Trainer({ model: mlp, optimizer: new optim.SGD(mlp.parameters(), { lr: 0.1 }), progress: 'log', progressStream: progress, outDir: out, evalInterval: 2 })
    .fit({
      train: [[x, y]], val, loss: mse, steps: 2,
      evalMetrics: (_m, [xb]) => ({ firstMean: xb.narrow(1, 0, 1).mean().item(), rows: xb.shape[0] }),
    });
  t.ok(Math.abs(r.valMetrics.firstMean - expected) < 1e-12, `weighted mean ${r.valMetrics.firstMean} vs ${expected}`);
  t.ok(Math.abs(r.valMetrics.rows - (4 * 4 + 2 * 2) / 6) < 1e-12, 'weighted by batch size');
  const records = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((rec) => 'val_loss' in rec);
  t.equal(records.length, 2, 'at the start and at step 2');
  t.ok(records.every((rec) => Math.abs(rec.val_firstMean - expected) < 1e-12), 'metrics.jsonl: val_firstMean');
  t.match(progress.text, /step 2: val loss \d\.\d{4} \| val firstMean [-\d.e]+ \| val rows 3\.333/);
  const trainer = new Trainer({ model: mlp, optimizer: new optim.SGD(mlp.parameters(), { lr: 0.1 }), progress: 'none', callbacks: [{ onEval: (_, info) => void seen.push(info.metrics) }] });
  await trainer.fit({ train: [[x, y]], val, loss: mse, steps: 1, evalMetrics: () => ({ one: 1 }) });
  t.same(seen, [{ one: 1 }, { one: 1 }], 'onEval gets the metrics');
  await t.rejects(trainer.fit({ train: [[x, y]], val, loss: mse, steps: 1, evalMetrics: () => ({ bad: NaN }) }), { name: 'ValueError', message: /evalMetrics must return an object of finite numbers/ });
  await t.rejects(trainer.fit({ train: [[x, y]], val, loss: mse, steps: 1, evalMetrics: () => ({ loss: 1 }) }), { name: 'ValueError', message: /cannot name a metric 'loss'/ });
  t.same(trainer.evaluateWithMetrics(val, { loss: mse }).metrics, {}, 'no evalMetrics: no metrics');
});

t.test('cudaGraph is checked when the Trainer is made: one process, a capturable optimizer, a model on a GPU', async (t) => {
  const mlp = new MLP();
  const make = (o: object) => new Trainer({ model: mlp, optimizer: new optim.AdamW(mlp.parameters()), progress: 'none', ...o });
  t.throws(() => make({ cudaGraph: 'yes' }), { name: 'ValueError', message: /cudaGraph must be a boolean/ });
  t.throws(() => make({ cudaGraph: true }), { name: 'ValueError', message: /capturable: true \(group 0 is not\)/ });
  const capturable = new optim.AdamW(mlp.parameters(), { capturable: true });
  t.throws(() => new Trainer({ model: mlp, optimizer: capturable, cudaGraph: true }), { name: 'ValueError', message: /model on one GPU; its parameters are on cpu/ });
  class Custom extends TrainStrategy {}
  t.throws(() => new Trainer({ model: mlp, optimizer: capturable, cudaGraph: true, strategy: new Custom() }), { name: 'ValueError', message: /single-process strategy, not Custom/ });
  t.doesNotThrow(() => make({ cudaGraph: false }));
});
