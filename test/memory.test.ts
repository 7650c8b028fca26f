// Deterministic memory: dispose, tidy, `using`, graph release after backward, and a 1,000-step
// training loop whose live tensors and native bytes stay flat.
import t from 'tap';
import * as kiln from '../lib/index';

t.test('dispose frees storage once the last view is gone', async (t) => {
  const before = kiln.memory();
  const a = kiln.zeros([1000]);
  const v = a.reshape(10, 100);
  t.equal(kiln.memory().bytes - before.bytes, 4000);
  a.dispose();
  t.equal(kiln.memory().bytes - before.bytes, 4000, 'the view keeps the storage');
  v.dispose();
  t.equal(kiln.memory().bytes, before.bytes);
  t.equal(kiln.memory().tensors, before.tensors);
  t.throws(() => a.add(1), kiln.DisposedError);
  a.dispose(); // idempotent
});

t.test('tidy disposes what was created inside, except its result', async (t) => {
  const before = kiln.memory();
  const kept = kiln.tidy(() => {
    const a = kiln.ones([100]);
    const b = a.mul(2);
    const c = b.add(1);
    return { c, list: [b] };
  });
  t.equal(kiln.memory().tensors - before.tensors, 2);
  t.same(kept.c.toArray().slice(0, 2), [3, 3]);
  kiln.dispose(kept);
  t.equal(kiln.memory().tensors, before.tensors);
  t.equal(kiln.memory().bytes, before.bytes);
  t.throws(() => kiln.tidy(() => { throw new Error('boom'); }), /boom/);
  t.equal(kiln.memory().tensors, before.tensors, 'a throwing scope frees its tensors too');
});

t.test('nested tidy passes results outward; keep() escapes every scope', async (t) => {
  const before = kiln.memory();
  let escaped: kiln.Tensor | undefined;
  const outer = kiln.tidy(() => {
    const inner = kiln.tidy(() => {
      escaped = kiln.keep(kiln.ones([5]));
      kiln.ones([5]);
      return kiln.zeros([5]);
    });
    kiln.ones([5]);
    return inner;
  });
  t.equal(kiln.memory().tensors - before.tensors, 2);
  t.notOk(outer.isDisposed);
  t.notOk(escaped!.isDisposed);
  outer.dispose();
  escaped!.dispose();
});

t.test('`using` disposes at the end of the block', async (t) => {
  const before = kiln.memory().tensors;
  {
    using a = kiln.ones([10]);
    t.equal(kiln.memory().tensors, before + 1);
    t.equal(a.numel, 10);
  }
  t.equal(kiln.memory().tensors, before);
});

t.test('backward releases the tensors the graph saved', async (t) => {
  const x = kiln.randn([64, 32], { requiresGrad: true });
  const w = kiln.randn([32, 16], { requiresGrad: true });
  const before = kiln.memory();
  const loss = kiln.tidy(() => x.matmul(w).tanh().mul(x.sum()).mean());
  t.ok(kiln.memory().tensors > before.tensors + 1, 'the graph holds saved tensors');
  loss.backward();
  loss.dispose();
  const after = kiln.memory();
  t.equal(after.tensors, before.tensors + 2, 'only the two new .grad tensors remain');
  kiln.dispose([x.grad, w.grad]);
});

t.test('1,000 training steps of an MLP hold live tensors and native bytes flat', async (t) => {
  kiln.manualSeed(0);
  const w1 = kiln.randn([8, 32]).mul(0.3).requiresGrad_();
  const b1 = kiln.zeros([32], { requiresGrad: true });
  const w2 = kiln.randn([32, 1]).mul(0.3).requiresGrad_();
  const b2 = kiln.zeros([1], { requiresGrad: true });
  const params = [w1, b1, w2, b2];
  const x = kiln.randn([64, 8]);
  const y = kiln.tidy(() => x.select(1, 0).mul(x.select(1, 1)).add(x.select(1, 2).sin()).unsqueeze(1));
  const samples: Array<{ tensors: number; bytes: number }> = [];
  let first = 0, last = 0;
  for (let step = 0; step < 1000; step++) {
    const loss = kiln.tidy(() => {
      const h = x.matmul(w1).add(b1).relu();
      const out = h.matmul(w2).add(b2);
      return out.sub(y).square().mean();
    });
    loss.backward();
    kiln.noGrad(() => {
      for (const p of params) {
        p.sub_(p.grad!, 0.05);
        p.grad!.zero_();
      }
    });
    if (step === 0) first = loss.item();
    last = loss.item();
    loss.dispose();
    if (step >= 10 && step % 100 === 0) samples.push(kiln.memory());
  }
  t.ok(last < first * 0.5, `loss fell from ${first.toFixed(4)} to ${last.toFixed(4)}`);
  const tensors = new Set(samples.map((s) => s.tensors));
  const bytes = new Set(samples.map((s) => s.bytes));
  t.equal(tensors.size, 1, `live tensors flat: ${[...tensors].join(', ')}`);
  t.equal(bytes.size, 1, `native bytes flat: ${[...bytes].join(', ')}`);
});

t.test('freed CPU blocks are cached for reuse, within the most live tensors needed; emptyCache frees them', async (t) => {
  const GiB = 2 ** 30;
  kiln.emptyCache();
  t.equal(kiln.memory().cachedBytes, 0, 'emptyCache leaves nothing cached');
  // A 4 MiB block comes back from the cache for the next tensor of its size.
  kiln.empty([1 << 20]).dispose();
  t.equal(kiln.memory().cachedBytes, 4 * 2 ** 20, 'a freed 4 MiB block is cached');
  const again = kiln.empty([1 << 20]);
  t.equal(kiln.memory().cachedBytes, 0, 'the next 4 MiB tensor takes it back');
  again.dispose();
  kiln.emptyCache();
  // An allocation the system refuses (400 GB) is an OutOfMemoryError and leaves the cache's limit as it was.
  t.throws(() => kiln.empty([1e11]), { name: 'OutOfMemoryError' });
  // Three 400 MB tensors (never touched, so no page is faulted in) need 1.2 GB at once; freed, all
  // three stay cached. Four 480 MB tensors then evict cached blocks rather than hold 1.2 GB of cache
  // beside 1.9 GB of live tensors: the total stays at what live tensors alone need (1.25x for size classes).
  const big = [0, 1, 2].map(() => kiln.empty([100e6]));
  for (const b of big) b.dispose();
  t.ok(kiln.memory().cachedBytes >= 3 * 400e6, 'all three are cached');
  const other = [0, 1, 2, 3].map(() => kiln.empty([120e6]));
  const m = kiln.memory();
  t.ok(m.cachedBytes < 400e6, `cached 400 MB blocks were freed to make room (${m.cachedBytes} cached)`);
  t.ok(m.bytes + m.cachedBytes <= 1.25 * Math.max(GiB, 4 * 480e6), `${m.bytes} live + ${m.cachedBytes} cached`);
  for (const o of other) o.dispose();
  kiln.emptyCache();
  t.equal(kiln.memory().cachedBytes, 0);
});

// A README-style synchronous loop (tidy + dispose, no await). Handles used to be freed only by
// finalizers that run when the event loop turns, so RSS grew by ~370 bytes per handle (about 2 GB
// by step 1,000 of a small GPT) while memory() stayed flat; a graph evaluated without noGrad and
// never backpropagated kept its saved tensors until the garbage collector ran.
t.test('RSS stays flat over a long synchronous GPT training loop, with and without a dropped graph', async (t) => {
  kiln.manualSeed(0);
  const model = new kiln.nn.GPT({ vocabSize: 32, blockSize: 8, nLayer: 1, nHead: 2, nEmbd: 16 });
  const opt = new kiln.optim.AdamW(model.parameters(), { lr: 1e-3 });
  const x = kiln.randint(0, 32, [4, 8]);
  const y = kiln.randint(0, 32, [4, 8]);
  // A full collection before each reading takes the JavaScript heap's own swings (tens of MB under
  // tap) out of RSS; it is synchronous, and it could not free the old handles (their finalizers
  // waited for the event loop).
  const gc = gcFunction();
  const rssMB = () => {
    gc();
    return process.memoryUsage().rss / 2 ** 20;
  };
  for (const dropGraph of [false, true]) {
    const rss: number[] = [];
    let at1000 = kiln.memory();
    for (let step = 1; step <= 4000; step++) {
      const loss = kiln.tidy(() => model.forward(x, y).loss);
      loss.backward();
      opt.step();
      opt.zeroGrad();
      loss.dispose();
      if (dropGraph) {
        const bytes = kiln.memory().bytes;
        kiln.tidy(() => { model.forward(x, y); });   // autograd on, never backpropagated
        if (kiln.memory().bytes !== bytes) t.fail(`step ${step}: the dropped graph kept ${kiln.memory().bytes - bytes} bytes`);
      }
      if (step === 1000) at1000 = kiln.memory();
      if (step % 1000 === 0) rss.push(rssMB());
    }
    const end = kiln.memory();
    const label = dropGraph ? 'with a dropped graph per step' : 'training only';
    t.equal(end.tensors, at1000.tensors, `${label}: live handles flat`);
    t.equal(end.bytes, at1000.bytes, `${label}: native bytes flat`);
    // About 700 handles a step: the old finalizer-bound handles grew RSS by ~0.25 MB a step (750 MB here).
    t.ok(Math.max(...rss) - rss[0] < 50, `${label}: RSS at steps 1000..4000: ${rss.map((r) => r.toFixed(0)).join(', ')} MB`);
  }
  x.dispose();
  y.dispose();
});

t.test('a graph dropped without backward frees its saved tensors when its output is disposed', async (t) => {
  const w = kiln.randn([256, 256], { requiresGrad: true });
  const base = kiln.memory();
  for (let i = 0; i < 200; i++) kiln.tidy(() => { w.exp(); });
  t.equal(kiln.memory().bytes, base.bytes, '200 x tidy(() => w.exp()) holds nothing');
  t.equal(kiln.memory().tensors, base.tensors);

  // Intermediates disposed by tidy stay reachable through the output's graph until it is disposed.
  const loss = kiln.tidy(() => w.tanh().mul(w).sum());
  t.ok(kiln.memory().bytes > base.bytes, 'the live output keeps the saved tensors');
  loss.dispose();
  t.equal(kiln.memory().bytes, base.bytes, 'disposing the output frees the whole graph');

  // A retained graph is freed by disposing its output, as PyTorch frees it when the output is dropped.
  const l2 = kiln.tidy(() => w.sigmoid().sum());
  l2.backward({ retainGraph: true });
  l2.backward({ retainGraph: true });
  l2.dispose();
  w.grad!.dispose();
  w.grad = null;
  t.equal(kiln.memory().bytes, base.bytes, 'a retained graph is freed with its output');

  // A branch that is still alive keeps its own part of the graph.
  const h = w.mul(2);
  const out = h.sum();
  out.dispose();
  t.ok(kiln.memory().bytes > base.bytes, 'h is alive');
  const again = kiln.tidy(() => h.square().sum());
  again.backward();
  t.ok(w.grad, 'backward still runs through the part of the graph h keeps');
  kiln.dispose([h, again, w.grad]);
  w.grad = null;
  t.equal(kiln.memory().bytes, base.bytes);
  t.equal(kiln.memory().tensors, base.tensors);
  w.dispose();
});

t.test('a graph thousands of ops deep unwinds when its output is disposed', async (t) => {
  const x = kiln.ones([4], { requiresGrad: true });
  const base = kiln.memory();
  const out = kiln.tidy(() => {
    let y = x;
    for (let i = 0; i < 20000; i++) y = y.sin();   // each node saves its input
    return y.sum();
  });
  t.ok(kiln.memory().tensors > base.tensors + 1000);
  out.dispose();
  t.equal(kiln.memory().tensors, base.tensors);
  x.dispose();
});

t.test('tensors nobody disposed are freed by the garbage collector (the safety net)', async (t) => {
  const gc = gcFunction();
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
  };
  await settle();   // what earlier tests left undisposed
  const base = kiln.memory();
  (() => {
    for (let i = 0; i < 50; i++) kiln.ones([1000]).mul(2);           // outside any scope, never disposed
    kiln.keep(kiln.tidy(() => kiln.ones([1000], { requiresGrad: true }).exp()));
  })();
  t.ok(kiln.memory().tensors >= base.tensors + 100, 'they are live until collected');
  await settle();
  t.equal(kiln.memory().tensors, base.tensors, 'collected tensors release their handles');
  t.equal(kiln.memory().bytes, base.bytes);

  // Graphs dropped undisposed, from ops whose backward rule (a closure) can reach their own output,
  // and a hook that captures its tensor: the safety net must not hold what it waits for.
  const x = kiln.randn([4, 100], { requiresGrad: true });
  const target = kiln.tensor([1, 2, 3, 4]);
  await settle();
  const before = kiln.memory();
  const ops: Record<string, (v: kiln.Tensor) => kiln.Tensor> = {
    softmax: (v) => v.softmax(-1),
    logSoftmax: (v) => v.logSoftmax(-1),
    layerNorm: (v) => v.layerNorm(100),
    crossEntropy: (v) => kiln.crossEntropy(v, target),
    dropout: (v) => v.dropout(0.5),
    hook: (v) => {
      const y = v.exp();
      y.registerHook(() => { void y.shape; });
      return y;
    },
  };
  for (const [name, op] of Object.entries(ops)) {
    (() => { for (let i = 0; i < 20; i++) op(x); })();
    await settle();
    t.equal(kiln.memory().tensors, before.tensors, `${name}: 20 undisposed graphs are collected`);
    t.equal(kiln.memory().bytes, before.bytes, `${name}: their saved tensors are freed`);
  }
  kiln.dispose([x, target]);
});

t.test('dispose() frees .grad; a throwing backward leaks nothing', async (t) => {
  const base = kiln.memory();
  for (let i = 0; i < 50; i++) {
    kiln.tidy(() => {
      const w = kiln.randn([64, 64], { requiresGrad: true });   // a leaf made and trained inside the scope
      w.square().sum().backward();
    });
  }
  t.equal(kiln.memory().tensors, base.tensors, 'a leaf disposed by tidy takes its gradient along');
  t.equal(kiln.memory().bytes, base.bytes);
  const x = kiln.tensor([1, 2, 3], { dtype: 'float32', requiresGrad: true });
  const before = kiln.memory().tensors;
  for (let i = 0; i < 5; i++) {
    const h = x.mul(2);
    h.registerHook(() => { throw new Error('boom'); });
    const s = h.sum();
    t.throws(() => s.backward(), /boom/);
    kiln.dispose([h, s]);
    const e = kiln.tidy(() => x.exp());
    const s2 = kiln.tidy(() => e.mul(e).sum());
    kiln.noGrad(() => e.add_(1));
    t.throws(() => s2.backward(), { name: 'AutogradError', message: /modified by an in-place operation/ });
    kiln.dispose([e, s2]);
  }
  t.equal(kiln.memory().tensors, before, 'a hook or a check that throws mid-backward leaves no gradient behind');
  x.dispose();
});

t.test('a worker thread that exits takes its handles out of memory().tensors', async (t) => {
  const { Worker } = require('worker_threads');
  const before = kiln.memory().tensors;
  const lib = require('path').join(__dirname, '..', 'dist', 'index.js');
  const w = new Worker(`const k = require(${JSON.stringify(lib)}); globalThis.kept = [1, 2, 3].map((n) => k.ones([n])); require('worker_threads').parentPort.postMessage(k.memory().tensors);`, { eval: true });
  const inWorker = await new Promise((resolve) => w.once('message', resolve));
  await new Promise((resolve) => w.once('exit', resolve));
  t.ok((inWorker as number) >= before + 3, 'the worker counted its own handles');
  t.equal(kiln.memory().tensors, before, 'they are gone with the worker');
});

t.test('memory(): peak since resetPeakMemory(); handles that are stale or forged are errors', async (t) => {
  kiln.resetPeakMemory();
  const m0 = kiln.memory();
  t.equal(m0.peakBytes, m0.bytes, 'the peak starts from what is held');
  const a = kiln.empty([1 << 16]);
  a.dispose();
  t.equal(kiln.memory().peakBytes, m0.bytes + 4 * (1 << 16), 'the peak saw the tensor');
  const native = require('../lib/native').native;
  const b = kiln.ones([2]);
  const h = b._h;
  b.dispose();
  t.equal(native.isDisposed(h), true);
  const c = kiln.ones([2]);   // may reuse b's slot, under a new generation
  t.throws(() => native.readBytes(h, new ArrayBuffer(8)), { name: 'DisposedError' }, 'a disposed handle stays disposed after its slot is reused');
  t.same(c.toArray(), [1, 1]);
  for (const forged of [-1, 0.5, 2 ** 60, c._h + 2 ** 32, NaN, '1', {}]) {
    t.throws(() => native.readBytes(forged, new ArrayBuffer(8)), { name: 'ValueError' }, `forged handle ${String(forged)}`);
  }
  c.dispose();
});

function gcFunction(): () => void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require('v8').setFlagsFromString('--expose-gc');
  return require('vm').runInNewContext('gc');
}
