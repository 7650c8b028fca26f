// The Trainer's step through a TrainStrategy: the parts run in order with the accumulation window's
// flags, a subclass that calls super trains exactly like the default, the losses stay on the device
// (one read per logging interval, counted), and the autocast option runs the forward, not backward,
// under bfloat16 autocast with float32 weights.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { nn, optim } from '../../lib/index';
import { isAutocastEnabled } from '../../lib/autocast';
import { DataLoader, TensorDataset } from '../../lib/data/index';
import { MicroBatchInfo, StepContext, StepInfo, TrainStrategy, Trainer } from '../../lib/train/index';
import { randomTensor, values } from '../helpers/gradcheck';

/** Host reads of tensors (item, dataSync, toArray), while the test below counts them. */
let reads = 0;

class MLP extends nn.Module {
  fc1 = new nn.Linear(4, 8);
  fc2 = new nn.Linear(8, 1);
  /** isAutocastEnabled() at each forward. */
  autocastSeen: boolean[] = [];
  override forward(x: Tensor): Tensor {
    this.autocastSeen.push(isAutocastEnabled());
    return this.fc2.forward(this.fc1.forward(x).tanh());
  }
}

const mse = (m: MLP, [x, y]: Tensor[]) => nn.mseLoss(m.forward(x), y);
const data = () => new DataLoader(new TensorDataset(randomTensor([24, 4], 1).to('float32'), randomTensor([24, 1], 2).to('float32')), { batchSize: 2 });

/** Records the parts as the Trainer calls them, then does what the default does. */
class Recording extends TrainStrategy<MLP> {
  calls: string[] = [];
  override forwardBackward(ctx: StepContext<MLP>, batch: unknown, info: MicroBatchInfo): Tensor {
    this.calls.push(`fb ${info.index}${info.isLastMicroBatch ? ' last' : ''}`);
    return super.forwardBackward(ctx, batch, info);
  }
  override beforeStep(ctx: StepContext<MLP>): Tensor | null {
    this.calls.push(`before (grads ${ctx.model.parameters().every((p) => p.grad !== null) ? 'complete' : 'missing'})`);
    return super.beforeStep(ctx);
  }
  override step(ctx: StepContext<MLP>): void {
    this.calls.push('step');
    super.step(ctx);
    this.calls.push(`after (grads ${ctx.model.parameters().every((p) => p.grad === null) ? 'cleared' : 'kept'})`);
  }
}

async function train(opts: { strategy?: TrainStrategy<MLP>; logInterval?: number; onStep?: (i: StepInfo) => void; autocast?: 'bfloat16' | false }) {
  kiln.manualSeed(5);
  const model = new MLP();
  const trainer = new Trainer({
    model, optimizer: new optim.AdamW(model.parameters(), { lr: 0.05 }), gradAccumulation: 3, clipGradNorm: 0.5, progress: 'none',
    logInterval: opts.logInterval, strategy: opts.strategy, autocast: opts.autocast,
    callbacks: opts.onStep ? [{ onStepEnd: (_t, i) => opts.onStep!(i) }] : [],
  });
  const train = data();
  const readsBefore = reads;
  const result = await trainer.fit({ train, loss: mse, steps: 4 });
  return { model, trainer, result, reads: reads - readsBefore, weights: model.parameters().flatMap((p) => values(p)) };
}

t.test('the parts run in order, with the window\'s flags; a subclass calling super trains like the default', async (t) => {
  const rec = new Recording();
  const custom = await train({ strategy: rec });
  const step = ['fb 0', 'fb 1', 'fb 2 last', 'before (grads complete)', 'step', 'after (grads cleared)'];
  t.same(rec.calls, [...step, ...step, ...step, ...step]);
  const plain = await train({});
  t.same(custom.weights, plain.weights, 'same weights');
  t.same(custom.trainer.history.train, plain.trainer.history.train, 'same losses');
  t.ok(plain.trainer.strategy instanceof TrainStrategy, 'the default strategy');
  t.throws(() => new Trainer({ model: plain.model, optimizer: new optim.SGD(plain.model.parameters()), strategy: {} as never }), kiln.ValueError);
});

t.test('losses are summed on the device: one read per logging interval', async (t) => {
  const proto = kiln.Tensor.prototype;
  const counted = ['item', 'dataSync', 'toArray'] as const;
  const originals = counted.map((name) => proto[name]);
  counted.forEach((name, i) => {
    (proto as any)[name] = function (this: Tensor, ...args: unknown[]) {
      reads++;
      return (originals[i] as (...a: unknown[]) => unknown).apply(this, args);
    };
  });
  try {
    const every = await train({ logInterval: 1 });
    t.equal(every.reads, 4, '4 steps of 3 micro-batches, logged every step: 4 reads');
    const twice = await train({ logInterval: 2 });
    t.equal(twice.reads, 2, 'logged every 2 steps: 2 reads');
    t.same(twice.trainer.history.train, every.trainer.history.train, 'the same per-step losses');
    t.equal(twice.result.trainLoss, every.result.trainLoss);
    const seen: Array<[number, number | null]> = [];
    const reading = await train({ logInterval: 4, onStep: (i) => void seen.push([i.loss, i.gradNorm]) });
    t.equal(reading.reads, 4, 'a callback reading StepInfo.loss reads each step');
    t.same(seen.map(([l]) => l), every.trainer.history.train.map(([, l]) => l), 'and gets the step\'s loss');
    t.ok(seen.every(([, n]) => n !== null && n > 0), 'and its gradient norm');
  } finally {
    counted.forEach((name, i) => ((proto as any)[name] = originals[i]));
  }
});

t.test('autocast: bfloat16 runs the forward under autocast, weights and gradients stay float32', async (t) => {
  const plain = await train({});
  t.ok(plain.model.autocastSeen.length === 12 && plain.model.autocastSeen.every((x) => !x), 'off by default');
  let inBackward: boolean | null = null;
  class HookStrategy extends TrainStrategy<MLP> {
    override forwardBackward(ctx: StepContext<MLP>, batch: unknown, info: MicroBatchInfo): Tensor {
      const p = ctx.model.fc1.weight;
      const h = p.registerHook(() => void (inBackward = isAutocastEnabled()));
      try {
        return super.forwardBackward(ctx, batch, info);
      } finally {
        h.remove();
      }
    }
  }
  const mixed = await train({ autocast: 'bfloat16', strategy: new HookStrategy() });
  t.ok(mixed.model.autocastSeen.length === 12 && mixed.model.autocastSeen.every((x) => x), 'every micro-batch\'s forward under autocast');
  t.equal(inBackward, false, 'backward runs with autocast off');
  t.ok(mixed.model.parameters().every((p) => p.dtype === 'float32'), 'float32 master weights');
  t.equal(isAutocastEnabled(), false, 'autocast is off again after fit');
  t.ok(Number.isFinite(mixed.result.trainLoss), 'it trains');
  const m = new MLP();
  t.throws(() => new Trainer({ model: m, optimizer: new optim.SGD(m.parameters()), autocast: 'float8' as never }), /autocast must be 'bfloat16' or false/);
});
