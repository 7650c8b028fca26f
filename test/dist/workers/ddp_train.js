// A data-parallel training run for test/dist/ddp.test.ts: trains a small GPT for `steps` steps on a
// fixed global batch sequence, each rank taking its contiguous share of every global batch, and
// writes the final parameters (rank 0) to `out`. With `plain`, trains without any process group on
// the whole global batch: the reference a DDP run must match.
// argv[2]: JSON { out, steps, plain, accum, zero, trainer, lr, batch, findUnused }
const kiln = require('../../../dist');
const { nn, optim, dist, io, data, train } = kiln;

const cfg = JSON.parse(process.argv[2]);
const CONFIG = { vocabSize: 11, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 16 };

// Global batch of step s: `batch` rows of blockSize+1 tokens from a fixed generator.
function globalBatch(s) {
  const rng = new data.Rng(1234, s);
  const rows = cfg.batch, T = CONFIG.blockSize + 1;
  const ids = new Int32Array(rows * T);
  for (let i = 0; i < ids.length; i++) ids[i] = Math.floor(rng.next() * CONFIG.vocabSize);
  const t = kiln.tensor(ids, { shape: [rows, T], dtype: 'int64' });
  return [t.narrow(1, 0, CONFIG.blockSize).contiguous(), t.narrow(1, 1, CONFIG.blockSize).contiguous()];
}

function share([x, y], rank, world) {
  const n = x.shape[0] / world;
  return [x.narrow(0, rank * n, n).contiguous(), y.narrow(0, rank * n, n).contiguous()];
}

(async () => {
  kiln.manualSeed(cfg.plain ? 7 : 7 + Number(process.env.RANK ?? 0) * 1000);  // DDP must broadcast rank 0's weights
  const model = new nn.GPT(CONFIG);
  let world = 1, rank = 0, wrapped = model;
  if (!cfg.plain) {
    await dist.initProcessGroup({ backend: 'gloo', timeoutMs: cfg.timeoutMs ?? 60000 });
    world = dist.worldSize();
    rank = dist.rank();
    wrapped = new dist.DistributedDataParallel(model, { bucketCapMB: cfg.bucketCapMB ?? 0.01, findUnusedParameters: !!cfg.findUnused });
    await wrapped.ready;
  }
  const opts = { lr: cfg.lr ?? 0.01, weightDecay: 0.1 };
  const opt = cfg.zero ? new dist.ZeroRedundancyOptimizer(wrapped.parameters(), { optimizer: optim.AdamW, ...opts }) : new optim.AdamW(wrapped.parameters(), opts);
  const accum = cfg.accum ?? 1;
  const microBatches = (s) => {
    const [x, y] = share(globalBatch(s), rank, world);
    const n = x.shape[0] / accum;
    return Array.from({ length: accum }, (_, i) => [x.narrow(0, i * n, n).contiguous(), y.narrow(0, i * n, n).contiguous()]);
  };
  const losses = [];
  if (cfg.trainer) {
    const batches = [];
    for (let s = 0; s < cfg.steps; s++) batches.push(...microBatches(s));
    const trainer = new train.Trainer({ model: wrapped, optimizer: opt, gradAccumulation: accum, progress: 'none', outDir: cfg.outDir ?? null });
    const r = await trainer.fit({ train: batches, steps: cfg.steps, loss: (m, [x, y]) => m.forward(x, y).loss });
    losses.push(r.trainLoss);
  } else {
    for (let s = 0; s < cfg.steps; s++) {
      const mbs = microBatches(s);
      for (let i = 0; i < accum; i++) {
        const run = () => {
          const loss = wrapped.forward(mbs[i][0], mbs[i][1]).loss;
          loss.div(accum).backward();
          if (i === 0) losses.push(loss.item());
        };
        if (!cfg.plain && i < accum - 1) wrapped.noSync(run);
        else run();
      }
      if (!cfg.plain) await wrapped.synchronize();
      opt.step();
      if (cfg.zero) await opt.synchronize();
      opt.zeroGrad(s % 2 === 0);  // both kinds: a new .grad (setToNone) and the bucket views zeroed in place
    }
  }
  if (rank === 0 && cfg.out) io.saveSafetensors(cfg.out, model.stateDict());
  if (cfg.zero) console.log(JSON.stringify({ rank, memory: opt.memoryReport() }));
  console.log(JSON.stringify({ rank, losses }));
  if (!cfg.plain) dist.destroyProcessGroup();
})().catch((e) => {
  console.error(`rank ${process.env.RANK}: ${e.stack}`);
  process.exit(1);
});
