// Training on CUDA: a GPT's first 20 AdamW steps match the CPU run's losses within 1e-4 relative
// (float32, TF32 off); a training step enqueues without host synchronization; 500 steps hold
// reserved GPU memory and cudaMalloc calls flat; the Trainer's cudaGraph option (capture after two
// eager steps, replays after) gives the eager run's losses, with a schedule, clipping, gradient
// accumulation and a last batch of another shape.
import t from 'tap';
import * as kiln from '../../lib/index';
import { nn, optim } from '../../lib/index';

const config = { vocabSize: 67, blockSize: 32, nLayer: 2, nHead: 4, nEmbd: 64, dropout: 0 };

function makeModels(): [InstanceType<typeof nn.GPT>, InstanceType<typeof nn.GPT>] {
  kiln.manualSeed(7);
  const cpu = new nn.GPT(config);
  const gpu = new nn.GPT(config);
  gpu.loadStateDict(cpu.stateDict());
  gpu.to('cuda');
  return [cpu, gpu];
}

function batches(n: number, B: number, T: number): Array<[kiln.Tensor, kiln.Tensor]> {
  kiln.manualSeed(11);
  const out: Array<[kiln.Tensor, kiln.Tensor]> = [];
  for (let i = 0; i < n; i++) {
    const seq = kiln.randint(0, config.vocabSize, [B, T + 1], { dtype: 'int64' });
    out.push([seq.slice(1, 0, T).contiguous(), seq.slice(1, 1, T + 1).contiguous()]);
  }
  return out;
}

function step(model: InstanceType<typeof nn.GPT>, opt: InstanceType<typeof optim.AdamW>, x: kiln.Tensor, y: kiln.Tensor): kiln.Tensor {
  const loss = kiln.tidy(() => model.forward(x, y).loss!);
  loss.backward();
  optim.clipGradNorm(model.parameters(), 1.0).dispose();
  opt.step();
  opt.zeroGrad();
  return loss;
}

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  t.test('the first 20 losses on CUDA match the CPU within 1e-4', async (t) => {
    kiln.cuda.setAllowTF32(false);
    const [cpu, gpu] = makeModels();
    const optC = new optim.AdamW(cpu.parameters(), { lr: 3e-3 });
    const optG = new optim.AdamW(gpu.parameters(), { lr: 3e-3 });
    const data = batches(20, 4, 32);
    const worst: number[] = [];
    for (const [x, y] of data) {
      const lc = step(cpu, optC, x, y);
      const xg = x.cuda(), yg = y.cuda();
      const lg = step(gpu, optG, xg, yg);
      const a = lc.item(), b = lg.item();
      worst.push(Math.abs(a - b) / Math.abs(a));
      kiln.dispose([lc, lg, xg, yg]);
    }
    const max = Math.max(...worst);
    t.ok(max <= 1e-4, `max relative loss difference over 20 steps ${max.toExponential(2)}`);
  });

  t.test('a training step enqueues without synchronizing; memory stays flat over 500 steps', async (t) => {
    const [, gpu] = makeModels();
    const opt = new optim.AdamW(gpu.parameters(), { lr: 1e-3 });
    const data = batches(8, 8, 32).map(([x, y]) => [x.cuda(), y.cuda()] as const);
    let syncsPerStep = -1;
    let reserved50 = 0, mallocs50 = 0, first = 0, last = 0;
    for (let i = 0; i < 500; i++) {
      const [x, y] = data[i % data.length];
      const s0 = kiln.cuda.syncCount();
      const loss = step(gpu, opt, x, y);
      if (i === 20) syncsPerStep = kiln.cuda.syncCount() - s0;
      if (i === 0) first = loss.item();
      if (i === 499) last = loss.item();
      loss.dispose();
      if (i === 50) {
        kiln.cuda.synchronize();
        reserved50 = kiln.cuda.memoryStats().reserved;
        mallocs50 = kiln.cuda.memoryStats().mallocs;
      }
    }
    kiln.cuda.synchronize();
    const stats = kiln.cuda.memoryStats();
    t.equal(syncsPerStep, 0, 'no host synchronization inside a training step');
    t.equal(stats.reserved, reserved50, `reserved memory flat from step 50 to 500 (${reserved50} bytes)`);
    t.equal(stats.mallocs, mallocs50, 'no cudaMalloc after warm-up');
    t.ok(last < first, `the loss fell (${first.toFixed(3)} -> ${last.toFixed(3)})`);
  });

  t.test("the Trainer's cudaGraph steps give the eager losses", async (t) => {
    kiln.cuda.setAllowTF32(false);
    // 9 batches of 8 and a last one of 4: the last step (a window of two) has other shapes and runs eagerly.
    const data = batches(10, 8, 32).map(([x, y], i) => (i === 9 ? [x.narrow(0, 0, 4).contiguous(), y.narrow(0, 0, 4).contiguous()] : [x, y]));
    const run = async (cudaGraph: boolean) => {
      const [, gpu] = makeModels();
      const optimizer = new optim.AdamW(gpu.parameters(), { lr: 3e-3, capturable: true });
      const trainer = new kiln.train.Trainer({
        model: gpu, optimizer, device: 'cuda', gradAccumulation: 2, clipGradNorm: 0.5, progress: 'none', cudaGraph,
        scheduler: (o, steps) => new optim.CosineAnnealingLR(o, { tMax: steps }),
      });
      const losses: number[] = [];
      await trainer.fit({ train: data, steps: 5, loss: (m, [x, y]: kiln.Tensor[]) => m.forward(x, y).loss! });
      for (const [, l] of trainer.history.train) losses.push(l);
      return { losses, params: gpu.parameters().map((p) => Array.from(p.cpu().dataSync() as Float32Array)) };
    };
    const eager = await run(false);
    const graphed = await run(true);
    t.equal(graphed.losses.length, 5);
    const worst = Math.max(...graphed.losses.map((l, i) => Math.abs(l - eager.losses[i]) / eager.losses[i]));
    t.ok(worst < 1e-5, `losses ${graphed.losses.map((l) => l.toFixed(5))} vs ${eager.losses.map((l) => l.toFixed(5))}`);
    let diff = 0;
    graphed.params.forEach((p, i) => p.forEach((v, j) => (diff = Math.max(diff, Math.abs(v - eager.params[i][j])))));
    t.ok(diff < 1e-5, `parameters after 5 steps within ${diff}`);
  });
}
