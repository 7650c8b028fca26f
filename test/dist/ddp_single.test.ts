// DistributedDataParallel, ZeroRedundancyOptimizer and DistributedSampler in a world of one process
// (in this process): bucket layout, the guards against racing the collectives, unused parameters,
// .grad as bucket views, the sampler's shares.
import t from 'tap';
import * as kiln from '../../lib';
import { DistError, ValueError } from '../../lib';
import { freePort } from './helpers';

const { dist, nn, optim, data } = kiln;
const gloo = dist.isBackendAvailable('gloo');

class TwoHeads extends nn.Module {
  body = new nn.Linear(4, 8);
  a = new nn.Linear(8, 2);
  b = new nn.Linear(8, 2);
  /** Both heads summed, or one of them (the other's parameters then get no gradient). */
  override forward(x: kiln.Tensor, head: 'a' | 'b' | 'both' = 'both'): kiln.Tensor {
    const h = this.body.forward(x).tanh();
    return head === 'both' ? this.a.forward(h).add(this.b.forward(h)) : this[head].forward(h);
  }
}

t.test('DDP in a world of one', { skip: !gloo && 'built without Gloo' }, async (t) => {
  await dist.initProcessGroup({ rank: 0, worldSize: 1, masterPort: await freePort(), timeoutMs: 10000 });
  t.teardown(() => dist.destroyProcessGroup());

  t.test('buckets, readiness, synchronize guards', async (t) => {
    kiln.manualSeed(1);
    const model = new TwoHeads();
    const ddp = new dist.DistributedDataParallel(model, { bucketCapMB: 64 / 2 ** 20 });
    t.throws(() => ddp.forward(kiln.ones([1, 4])), { name: 'DistError', message: /await ddp.ready/ });
    await ddp.ready;
    const layout = ddp.bucketLayout();
    t.same(layout.flatMap((b) => b.params), ['b.bias', 'b.weight', 'a.bias', 'a.weight', 'body.bias', 'body.weight'], 'reverse registration order');
    t.ok(layout.length > 1, `several buckets at a 64-byte cap (${layout.length})`);
    t.equal(layout.reduce((n, b) => n + b.numel, 0), model.numParameters());

    const opt = new optim.SGD(ddp.parameters(), { lr: 0.1 });
    const x = kiln.randn([3, 4]);
    // head b only: a's parameters get no gradient.
    t.throws(() => ddp.forward(x, 'b').sum().backward(), { name: 'DistError', message: /got no gradient in this backward: a\.bias, a\.weight.*findUnusedParameters: true/ });
    await ddp.synchronize();
    opt.zeroGrad();

    ddp.forward(x).sum().backward();
    t.throws(() => opt.step(), { name: 'DistError', message: /still being all-reduced: `await ddp.synchronize\(\)`/ });
    t.throws(() => ddp.forward(x), { name: 'DistError', message: /await ddp.synchronize\(\)/ });
    await ddp.synchronize();
    // The gradient one process computes without DDP, at the model's current weights.
    const localGrad = () => kiln.tidy(() => {
      const m2 = new TwoHeads();
      m2.loadStateDict(model.stateDict());
      m2.forward(x).sum().backward();
      return kiln.keep(m2.body.weight.grad!.clone());
    });
    const g = model.body.weight.grad!;
    t.ok(kiln.allclose(g, localGrad()), 'a world of one: the gradient is the local one');
    opt.step();

    // zeroGrad(false) keeps the bucket views; the default (setToNone) drops them and DDP copies the
    // next gradient back into its bucket.
    opt.zeroGrad(false);
    t.equal(model.body.weight.grad, g, 'zeroGrad(false) keeps the view');
    ddp.forward(x).sum().backward();
    await ddp.synchronize();
    t.equal(model.body.weight.grad, g, 'backward accumulated into the bucket view');
    t.ok(kiln.allclose(g, localGrad()));
    opt.zeroGrad();
    t.equal(model.body.weight.grad, null);
    ddp.forward(x).sum().backward();
    await ddp.synchronize();
    t.ok(model.body.weight.grad && kiln.allclose(model.body.weight.grad, localGrad()), 'a fresh gradient went into the bucket');

    // noSync: nothing in flight afterwards, the gradients add up locally.
    opt.zeroGrad(false);
    ddp.noSync(() => ddp.forward(x).sum().backward());
    ddp.noSync(() => ddp.forward(x).sum().backward());
    t.ok(kiln.allclose(model.body.weight.grad!, localGrad().mul(2)), 'two backwards accumulated');
    opt.step();   // allowed: nothing was all-reduced
  });

  t.test('a second backward during the all-reduce, and a backward that throws midway', async (t) => {
    const x = kiln.randn([3, 4]);
    const racing = new dist.DistributedDataParallel(new TwoHeads());
    await racing.ready;
    const loss = racing.forward(x).sum();
    loss.backward({ retainGraph: true });
    t.throws(() => loss.backward(), { name: 'DistError', message: /a backward added gradients while the last one's were still being all-reduced/ });
    await racing.synchronize();
    t.throws(() => racing.forward(x), { name: 'DistError', message: /cannot be used again/ });

    const model = new TwoHeads();
    const ddp = new dist.DistributedDataParallel(model, { bucketCapMB: 64 / 2 ** 20 });
    await ddp.ready;
    // The first layer's gradient arrives last: by then the heads' buckets are all-reducing.
    const hook = model.body.weight.registerHook(() => {
      throw new Error('hook failed');
    });
    t.throws(() => ddp.forward(x).sum().backward(), /hook failed/, 'the backward\'s own error');
    hook.remove();
    await ddp.synchronize();
    // Alone in its group the wrapper cannot be out of step: the next backward starts afresh and
    // launches every bucket (test/dist/failure.js ddp-abort checks the case with peers).
    ddp.forward(x).sum().backward();
    await ddp.synchronize();
    t.ok(model.body.weight.grad!.abs().sum().item() > 0, 'the next step works');
  });

  t.test('the Trainer with DDP: callbacks may read the loss; a stop() in onFitStart trains nothing', async (t) => {
    const model = new TwoHeads();
    const ddp = new dist.DistributedDataParallel(model);
    const batches = [[kiln.randn([4, 4]), kiln.randn([4, 2])]];
    const seen: number[] = [];
    const trainer = new kiln.train.Trainer({
      model: ddp, optimizer: new optim.SGD(ddp.parameters(), { lr: 0.1 }), progress: 'none',
      callbacks: [{ onStepEnd: (_tr, info) => void seen.push(info.loss) }],
    });
    const r = await trainer.fit({ train: batches, steps: 3, loss: (m, [x, y]) => nn.mseLoss(m.forward(x), y) });
    t.equal(r.step, 3);
    t.equal(seen.length, 3);
    t.ok(seen.every(Number.isFinite));
    const stopper = new kiln.train.Trainer({
      model: ddp, optimizer: new optim.SGD(ddp.parameters(), { lr: 0.1 }), progress: 'none',
      callbacks: [{ onFitStart: (tr) => tr.stop() }],
    });
    const r2 = await stopper.fit({ train: batches, steps: 3, loss: (m, [x, y]) => nn.mseLoss(m.forward(x), y) });
    t.equal(r2.step, 0);
    t.ok(r2.stopped);
  });

  t.test('findUnusedParameters counts missing gradients as zeros', async (t) => {
    const model = new TwoHeads();
    const ddp = new dist.DistributedDataParallel(model, { findUnusedParameters: true });
    await ddp.ready;
    ddp.forward(kiln.ones([2, 4]), 'b').sum().backward();
    await ddp.synchronize();
    t.same(Array.from(model.a.weight.grad!.dataSync()), new Array(16).fill(0), 'the unused head: zeros');
    t.ok(model.b.weight.grad!.abs().sum().item() > 0);
  });

  t.test('the wrapped module must match the group', async (t) => {
    t.throws(() => new dist.DistributedDataParallel({} as never), ValueError);
    t.throws(() => new dist.DistributedDataParallel(new TwoHeads(), { bucketCapMB: 0 }), ValueError);
  });

  t.test('ZeroRedundancyOptimizer in a world of one equals its optimizer', async (t) => {
    kiln.manualSeed(3);
    const a = new TwoHeads(), b = new TwoHeads();
    b.loadStateDict(a.stateDict());
    const zero = new dist.ZeroRedundancyOptimizer(a.parameters(), { optimizer: optim.AdamW, lr: 0.01 });
    const adam = new optim.AdamW(b.parameters(), { lr: 0.01 });
    t.equal(zero.paramGroups[0].lr, 0.01);
    t.same(zero.paramGroups[0].betas, [0.9, 0.999], 'groups show the wrapped optimizer\'s defaults');
    for (let i = 0; i < 3; i++) {
      const x = kiln.randn([5, 4]);
      for (const [m, o] of [[a, zero], [b, adam]] as const) {
        m.forward(x).square().mean().backward();
        o.step();
        o.zeroGrad();
      }
      t.throws(() => zero.step(), { name: 'DistError', message: /await opt.synchronize\(\)/ });
      await zero.synchronize();
    }
    t.ok(kiln.allclose(a.body.weight, b.body.weight, 0, 1e-7));
    const sd = zero.stateDict();
    t.equal(Object.keys(sd.state).length, 6);
    const c = new TwoHeads();
    const adam2 = new optim.AdamW(c.parameters(), { lr: 0.01 });
    adam2.loadStateDict(sd);
    t.equal(adam2.state.get(c.body.weight)!.step, 3, 'its state dict loads into a plain AdamW');
    t.throws(() => new dist.ZeroRedundancyOptimizer(a.parameters(), {} as never), { name: 'ValueError', message: /optimizer class/ });
  });
});

t.test('DistributedSampler: disjoint shares that cover the epoch', async (t) => {
  const ds = { length: 10 };
  const shares = [0, 1, 2].map((rank) => new data.DistributedSampler(ds, { numReplicas: 3, rank, seed: 5 }));
  t.equal(shares[0].length, 4, 'ceil(10 / 3), padded by wrapping');
  const epoch0 = shares.map((s) => Array.from(s.order(0)));
  const all = epoch0.flat();
  t.equal(all.length, 12);
  t.same([...new Set(all)].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'every item in some share');
  t.notSame(Array.from(shares[0].order(1)), epoch0[0], 'each epoch a new order');
  const drop = new data.DistributedSampler(ds, { numReplicas: 3, rank: 0, dropLast: true, shuffle: false });
  t.same(Array.from(drop.order(0)), [0, 3, 6]);
  t.throws(() => new data.DistributedSampler(ds, { numReplicas: 2, rank: 2 }), { name: 'ValueError', message: /rank must be an integer in \[0, 2\)/ });
  const single = new data.DistributedSampler(ds);
  t.equal(single.numReplicas, 1, 'defaults to the (absent) process group: one replica');

  const items = new data.TensorDataset(kiln.arange(10));
  const loaders = [0, 1].map((rank) => new data.DataLoader(items, { batchSize: 2, sampler: new data.DistributedSampler(items, { numReplicas: 2, rank, seed: 1 }) }));
  t.equal(loaders[0].length, 3);
  const seen = loaders.flatMap((l) => [...l].flatMap(([b]) => Array.from(b.dataSync(), Number)));
  t.same(seen.sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.throws(() => new data.DataLoader(items, { shuffle: true, sampler: new data.DistributedSampler(items, { numReplicas: 2, rank: 0 }) }), { message: /exclude each other/ });

  // A position saved on 2 replicas resumes on 1 at the same point of the epoch.
  const it = loaders[0][Symbol.iterator]();
  it.next();
  it.next();
  const sd = loaders[0].stateDict();
  t.same(sd, { seed: 0, epoch: 0, position: 2, replicas: 2 }.seed === sd.seed ? { ...sd } : sd);
  t.equal(sd.replicas, 2);
  const one = new data.DataLoader(items, { batchSize: 2, sampler: new data.DistributedSampler(items, { numReplicas: 1, rank: 0, seed: 1 }) });
  one.loadStateDict(sd);
  t.equal(one.stateDict().position, 4, '2 batches on each of 2 replicas: 4 on one');
});
