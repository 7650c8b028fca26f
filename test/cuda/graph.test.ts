// CUDA graphs on a GPU: a captured computation replays on new inputs copied into its static
// tensors; the graph's memory is not handed to eager work while it lives; a captured training step
// (SGD with momentum at a constant learning rate, warmed up eagerly first) replays the same losses
// and parameters as eager steps; what cannot be captured (reads, host data, random draws, nesting,
// other streams) is a ValueError that leaves the device usable; replays hold memory steady, and
// dispose returns the graph's memory (to the driver at emptyCache).
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';

const { CUDAGraph } = kiln.cuda;

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  const values = (x: Tensor) => Array.from(x.cpu().dataSync() as Float32Array);
  const maxDiff = (a: number[], b: number[]) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

  t.test('replays rerun the captured work on whatever the static inputs hold', async (t) => {
    const x = kiln.randn([1000], { device: 'cuda' });
    const f = () => kiln.tidy(() => x.mul(2).add(1).relu().sum());
    f().dispose(); // warm-up
    const g = new CUDAGraph();
    const s0 = kiln.cuda.syncCount();
    const y = g.capture(f);
    t.equal(kiln.cuda.syncCount(), s0, 'capturing does not synchronize');
    t.equal(kiln.cuda.isCapturing(), false, 'the capture is over');
    for (let i = 0; i < 5; i++) {
      const fresh = kiln.randn([1000]);
      x.copy_(fresh.to({ device: 'cuda' }));
      g.replay();
      const ref = fresh.mul(2).add(1).relu().sum().item();
      t.ok(Math.abs(y.item() - ref) <= 1e-3 * Math.max(1, Math.abs(ref)), `replay ${i}: ${y.item()} vs ${ref}`);
    }
    g.dispose();
    g.dispose();
    t.throws(() => g.replay(), { name: 'ValueError', op: 'CUDAGraph.replay', message: /disposed/ });
  });

  t.test("the graph's temporaries are not handed to eager work while it lives", async (t) => {
    const x = kiln.full([1 << 16], 3, { device: 'cuda' });
    const f = () => kiln.tidy(() => x.mul(2).add(x.mul(3)).mul(0.5));
    f().dispose();
    const g = new CUDAGraph();
    const y = g.capture(f);
    // Eager work of the same sizes after the capture, scribbling over whatever it is given.
    const junk = Array.from({ length: 8 }, () => kiln.full([1 << 16], -7, { device: 'cuda' }));
    g.replay();
    junk.forEach((j) => j.fill_(123));
    kiln.cuda.emptyCache(); // returns cached memory to the driver, but not the graph's
    const more = Array.from({ length: 8 }, () => kiln.full([1 << 16], -7, { device: 'cuda' }));
    g.replay();
    more.forEach((j) => j.fill_(5));
    t.ok(values(y).every((v) => v === 7.5), 'every element is (6 + 9) / 2');
    more.forEach((j) => j.dispose());
    junk.forEach((j) => j.dispose());
    g.dispose();
  });

  t.test('a captured training step replays the eager losses and parameters', async (t) => {
    const make = () => {
      kiln.manualSeed(3);
      const model = new kiln.nn.Sequential(new kiln.nn.Linear(32, 64), new kiln.nn.GELU(), new kiln.nn.Linear(64, 10));
      model.to({ device: 'cuda' });
      const opt = new kiln.optim.SGD(model.parameters(), { lr: 0.05, momentum: 0.9 });
      return { model, opt };
    };
    kiln.manualSeed(11);
    const data = Array.from({ length: 12 }, () => [kiln.randn([16, 32]), kiln.randint(0, 10, [16])]);
    const step = (m: ReturnType<typeof make>, x: Tensor, y: Tensor) => {
      m.opt.zeroGrad();
      const loss = kiln.tidy(() => {
        const l = kiln.nn.crossEntropy(m.model.forward(x), y);
        l.backward();
        return l;
      });
      m.opt.step();
      return loss;
    };

    const eager = make();
    const eagerLosses = data.map(([x, y]) => step(eager, x.to({ device: 'cuda' }), y.to({ device: 'cuda' })).item());

    const graphed = make();
    const sx = data[0][0].to({ device: 'cuda' }), sy = data[0][1].to({ device: 'cuda' });
    const losses = [step(graphed, sx, sy).item()]; // eager warm-up: the momentum buffers exist
    const g = new CUDAGraph();
    sx.copy_(data[1][0].to({ device: 'cuda' }));
    sy.copy_(data[1][1].to({ device: 'cuda' }));
    const loss = g.capture(() => step(graphed, sx, sy));
    for (let i = 1; i < data.length; i++) {
      sx.copy_(data[i][0].to({ device: 'cuda' }));
      sy.copy_(data[i][1].to({ device: 'cuda' }));
      g.replay();
      losses.push(loss.item());
    }
    t.ok(maxDiff(losses, eagerLosses) < 1e-5, `losses ${losses.map((l) => l.toFixed(5))} vs ${eagerLosses.map((l) => l.toFixed(5))}`);
    const pe = eager.model.parameters(), pg = graphed.model.parameters();
    t.ok(pe.every((p, i) => maxDiff(values(p), values(pg[i])) < 1e-5), 'parameters after 12 steps');

    const before = kiln.cuda.memoryStats().allocated;
    for (let i = 0; i < 50; i++) g.replay();
    kiln.cuda.synchronize();
    t.equal(kiln.cuda.memoryStats().allocated, before, 'replays allocate nothing');
    g.dispose();
  });

  t.test('what cannot be captured is a ValueError, and the device stays usable', async (t) => {
    const x = kiln.ones([64], { device: 'cuda' });
    const side = new kiln.cuda.Stream();
    const cases: Array<[string, () => unknown, RegExp]> = [
      ['item', () => x.sum().item(), /captured.*wait/],
      ['host data', () => kiln.tensor([1, 2, 3], { device: 'cuda' }), /host memory/],
      ['random', () => kiln.rand([8], { device: 'cuda' }), /same numbers/],
      ['synchronize', () => kiln.cuda.synchronize(), /captured/],
      ['nesting', () => new CUDAGraph().capture(() => x.add(1)), /do not nest/],
      ['another stream', () => kiln.cuda.withStream(side, () => x.add(1)), /its own stream/],
    ];
    for (const [what, f, message] of cases) {
      const g = new CUDAGraph();
      t.throws(() => g.capture(() => (x.add(1), f())), { name: 'ValueError', message }, what);
      t.equal(kiln.cuda.isCapturing(), false, `${what}: the capture was abandoned`);
      t.throws(() => g.replay(), { name: 'ValueError' }, `${what}: nothing to replay`);
      t.equal(x.add(1).sum().item(), 128, `${what}: eager work runs after it`);
    }
    const g = new CUDAGraph();
    g.capture(() => x.mul(2));
    t.throws(() => g.capture(() => x.mul(2)), { name: 'ValueError', message: /already captured/ });
    t.throws(() => g.capture(async () => 1), { name: 'ValueError' });
    g.dispose();
  });

  t.test('dispose returns the memory the graph held', async (t) => {
    kiln.cuda.synchronize();
    const x = kiln.randn([1 << 20], { device: 'cuda' });
    const f = () => kiln.tidy(() => x.mul(2).exp().sum());
    f().dispose();
    const before = kiln.cuda.memoryStats().allocated;
    const g = new CUDAGraph();
    const y = g.capture(f);
    g.replay();
    y.dispose();
    g.dispose();
    kiln.cuda.synchronize();
    t.equal(kiln.cuda.memoryStats().allocated, before, 'allocated is back where it was');
    kiln.cuda.emptyCache();
    const reserved = kiln.cuda.memoryStats().reserved;
    const again = new CUDAGraph();
    again.capture(f).dispose();
    again.dispose();
    kiln.cuda.emptyCache();
    t.equal(kiln.cuda.memoryStats().reserved, reserved, "a disposed graph's memory goes back to the driver with emptyCache");
  });
}
