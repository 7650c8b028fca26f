// A pipeline-parallel training run for test/dist/pipeline.test.ts: a small GPT (seed 7) trained with
// AdamW on a fixed sequence of batches (a few targets set to -100), either split into stages over the
// job's ranks (dist.pipeline) or in one process without a group (`plain`, the reference). Writes the
// first step's gradients (`${out}.grads.<rank>`; the stage's own parameters), the initial and final
// whole-model state dicts (`${out}.init`, `${out}`, gathered on rank 0), and, with `reload`, the state
// dict gathered after every stage loaded that plain checkpoint (`${out}.reload`).
// With `mlp`, the model is a list of five modules (an MLP, mean squared error) instead. With
// `freeze`, the embeddings (wte tied to the head) and blocks 0 and 1 are frozen (fine-tuning the top):
// the run then reports how many frozen parameters got a .grad (`frozenGrads`, after the first step).
// argv[2]: JSON { out, steps, plain, stages, microBatches, schedule, dtype, reload, mlp, freeze }
const kiln = require('../../../dist');
const { nn, optim, dist, io, data } = kiln;

const cfg = JSON.parse(process.argv[2]);
const CONFIG = { vocabSize: 11, blockSize: 8, nLayer: 4, nHead: 2, nEmbd: 16 };
const BATCH = 8;

function batch(s) {
  const rng = new data.Rng(99, s);
  const T = CONFIG.blockSize + 1;
  const ids = new Int32Array(BATCH * T);
  for (let i = 0; i < ids.length; i++) ids[i] = Math.floor(rng.next() * CONFIG.vocabSize);
  const t = kiln.tensor(ids, { shape: [BATCH, T], dtype: 'int64' });
  const y = t.narrow(1, 1, CONFIG.blockSize).contiguous();
  // Ignored targets in two micro-batches, unevenly: the loss is the mean over the rest.
  kiln.noGrad(() => { y.narrow(0, 0, 1).narrow(1, 0, 3).fill_(-100); y.narrow(0, 5, 1).narrow(1, 2, 1).fill_(-100); });
  return [t.narrow(1, 0, CONFIG.blockSize).contiguous(), y];
}

// The MLP's batch of step s: x [8, 4], y [8, 1].
function mlpBatch(s) {
  const rng = new data.Rng(5, s);
  const v = Float32Array.from({ length: BATCH * 5 }, () => rng.next() * 2 - 1);
  const t = kiln.tensor(v, { shape: [BATCH, 5] });
  return [t.narrow(1, 0, 4).contiguous(), t.narrow(1, 4, 1).contiguous()];
}

function gradsOf(named) {
  return new Map(named.map(([n, p]) => [n, p.grad ?? kiln.zerosLike(p)]));
}

(async () => {
  kiln.manualSeed(7);
  const layers = cfg.mlp ? [new nn.Linear(4, 16), new nn.Tanh(), new nn.Linear(16, 16), new nn.Tanh(), new nn.Linear(16, 1)] : null;
  const model = layers ? new nn.Sequential(...layers) : new nn.GPT(CONFIG);
  if (cfg.dtype) model.to(cfg.dtype);
  if (cfg.freeze) for (const [n, p] of model.namedParameters()) if (/^(wte|wpe|blocks\.[01])\./.test(n)) p.requiresGrad = false;
  let pipe = null, rank = 0;
  if (cfg.plain) {
    io.saveSafetensors(`${cfg.out}.init`, model.stateDict());
  } else {
    await dist.initProcessGroup({ backend: 'gloo', timeoutMs: 60000 });
    rank = dist.rank();
    const opts = { stages: cfg.stages, microBatches: cfg.microBatches, schedule: cfg.schedule };
    pipe = layers ? dist.pipeline(layers, { ...opts, loss: (out, y) => nn.mseLoss(out, y) }) : dist.pipeline(model, opts);
    const init = await pipe.stateDict();
    if (init) io.saveSafetensors(`${cfg.out}.init`, init);
  }
  const params = pipe ? pipe.namedParameters() : model.namedParameters();
  const opt = new optim.AdamW(params.map(([, p]) => p), { lr: 0.001, weightDecay: 0.1 });
  const losses = [], bubbles = [];
  let frozenGrads = 0;
  for (let s = 0; s < cfg.steps; s++) {
    const [x, y] = layers ? mlpBatch(s) : batch(s);
    if (pipe) {
      const r = await pipe.step(x, y);
      if (r.loss !== null) losses.push(r.loss);
      bubbles.push(r.measuredBubble);
    } else {
      const loss = layers ? nn.mseLoss(model.forward(x), y) : model.forward(x, y).loss;
      loss.backward();
      losses.push(loss.item());
    }
    if (s === 0) {
      io.saveSafetensors(`${cfg.out}.grads.${rank}`, gradsOf(params));
      frozenGrads = params.filter(([, p]) => !p.requiresGrad && p.grad !== null).length;
    }
    opt.step();
    opt.zeroGrad();
  }
  const final = pipe ? await pipe.stateDict() : model.stateDict();
  if (final) io.saveSafetensors(cfg.out, final);
  if (pipe && cfg.reload) {
    pipe.loadStateDict(io.loadSafetensors(cfg.reload).tensors);
    const again = await pipe.stateDict();
    if (again) io.saveSafetensors(`${cfg.out}.reload`, again);
  }
  console.log(JSON.stringify({ rank, losses, bubbles, frozenGrads, partition: pipe?.partition, analytic: pipe?.bubbleFraction }));
  if (pipe) dist.destroyProcessGroup();
})().catch((e) => {
  console.error(`rank ${process.env.RANK}: ${e.stack}`);
  process.exit(1);
});
