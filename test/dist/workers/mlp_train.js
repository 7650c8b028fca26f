// kiln's side of the PyTorch parity test (test/dist/torch_parity.test.ts): the training loop of
// `scripts/torch_dist_ref.py parity`, step for step, under kiln's DistributedDataParallel. An MLP of
// nn.Linear layers in a ModuleList named `layers` (the weights file's names layers.{i}.weight/bias),
// tanh between layers, mean-squared-error loss; step s on rank r trains on rows [r*B/W, (r+1)*B/W) of
// x[s], y[s], split into `accumulate` micro-batches whose losses / accumulate are backpropagated under
// noSync but for the last. Computes in the run's dtype, rounding the files' weights and data to it as
// the script's --dtype does. Several runs share one process group (each with its own model, DDP
// wrapper and optimizer), so the test pays for process start and rendezvous once.
// argv[2]: JSON { runs: [{ name, weights, data, dtype, steps, lr, optimizer: 'adamw'|'sgd', accumulate, out }] }
// Prints per run {"name", "rank", "losses"}; rank 0 writes the final parameters to each run's out.
const kiln = require('../../../dist');
const { nn, optim, dist, io } = kiln;

class MLP extends nn.Module {
  constructor(sizes, dtype) {
    super();
    this.layers = new nn.ModuleList(sizes.slice(1).map((out, i) => new nn.Linear(sizes[i], out, { dtype })));
  }
  forward(x) {
    const n = this.layers.length;
    [...this.layers].forEach((layer, i) => {
      x = layer.forward(x);
      if (i < n - 1) x = x.tanh();
    });
    return x;
  }
}

// The layer widths [in, h1, ..., out] of the weights file's layers.{i}.weight [out, in].
function sizesOf(weights) {
  const sizes = [];
  for (let i = 0; weights.has(`layers.${i}.weight`); i++) {
    const [out, inp] = weights.get(`layers.${i}.weight`).shape;
    if (i === 0) sizes.push(inp);
    sizes.push(out);
  }
  return sizes;
}

// The torch script's options: AdamW(betas (0.9, 0.999), eps 1e-8, weight_decay 0.01); SGD(momentum 0.9).
function optimizer(name, params, lr) {
  if (name === 'adamw') return new optim.AdamW(params, { lr, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
  if (name === 'sgd') return new optim.SGD(params, { lr, momentum: 0.9 });
  throw new Error(`unknown optimizer ${name}`);
}

async function train(run, rank, world) {
  const weights = io.loadSafetensors(run.weights).tensors;
  const data = io.loadSafetensors(run.data).tensors;
  const x = data.get('x').to(run.dtype), y = data.get('y').to(run.dtype);
  const model = new MLP(sizesOf(weights), run.dtype);
  model.loadStateDict(weights);   // converts to the model's dtype
  const ddp = new dist.DistributedDataParallel(model);
  await ddp.ready;
  const opt = optimizer(run.optimizer, ddp.parameters(), run.lr);
  const local = x.shape[1] / world, micro = local / run.accumulate;
  const losses = [];
  for (let s = 0; s < run.steps; s++) {
    let total = 0;
    kiln.tidy(() => {
      const xs = x.select(0, s).narrow(0, rank * local, local), ys = y.select(0, s).narrow(0, rank * local, local);
      for (let k = 0; k < run.accumulate; k++) {
        const backward = () => {
          const loss = nn.mseLoss(ddp.forward(xs.narrow(0, k * micro, micro)), ys.narrow(0, k * micro, micro)).div(run.accumulate);
          loss.backward();
          total += loss.item();
        };
        if (k < run.accumulate - 1) ddp.noSync(backward);
        else backward();
      }
    });
    await ddp.synchronize();
    opt.step();
    opt.zeroGrad();
    losses.push(total);
  }
  if (rank === 0) io.saveSafetensors(run.out, model.stateDict());
  console.log(JSON.stringify({ name: run.name, rank, losses }));
}

(async () => {
  const { runs } = JSON.parse(process.argv[2]);
  await dist.initProcessGroup({ backend: 'gloo', timeoutMs: 60000 });
  for (const run of runs) await train(run, dist.rank(), dist.worldSize());
  dist.destroyProcessGroup();
})().catch((e) => {
  console.error(`rank ${process.env.RANK}: ${e.stack}`);
  process.exit(1);
});
