// Tensor-parallel checks for test/dist/tp.test.ts, one rank of a Gloo job. Each rank also builds the
// plain (unsplit) modules from the same seed, so it compares its shards with them in process.
// argv[2]: JSON { mode: 'layers' | 'train' | 'errors' | 'seeded', steps, dtype, tp, dp }
//   layers: every TP layer, the TP block and the TP GPT in float64 against the plain ones: forward
//           and gradients (max abs differences printed as JSON).
//   train:  a TP GPT (tp ranks per group, dp groups under DDP) trained `steps` AdamW steps against
//           the plain GPT on the whole global batch; the TP group's bytes in one step.
//   errors: the messages of bad sizes, groups and inputs.
//   seeded: layers built fresh (no source) on ranks seeded differently: the replicated biases and the
//           outputs, printed for comparison across ranks, with rank 0's own plain draw of the row layer.
const kiln = require('../../../dist');
const { nn, optim, dist, data } = kiln;
const { tp } = dist;

const cfg = JSON.parse(process.argv[2]);
const maxDiff = (a, b) => kiln.tidy(() => a.sub(b).abs().max().item());

/** Max abs differences of par's gradients and the plain module's, cut to par's shards. */
function gradDiffs(plain, par, out, prefix) {
  const grads = new Map(plain.namedParameters().map(([n, p]) => [n, p.grad]));
  const cut = tp.shardStateDict(par, grads);
  for (const [n, p] of par.namedParameters()) out[`${prefix} grad ${n}`] = maxDiff(p.grad, cut.get(n));
}

function ownPart(t, g) {
  const n = t.shape[t.ndim - 1] / g.size;
  return t.narrow(-1, g.rank * n, n);
}

function layers(group) {
  const f64 = { dtype: 'float64' };
  const d = {};
  kiln.manualSeed(11);
  // A fixed upstream gradient for each output, the same on every rank.
  const seeded = (shape) => kiln.randn(shape, f64);

  for (const gatherOutput of [true, false]) {
    const plain = new nn.Linear(6, 8, f64);
    const par = new tp.ColumnParallelLinear(6, 8, { group, gatherOutput, source: plain });
    const x = seeded([3, 6]), w = seeded([3, 8]);
    const xp = x.clone().requiresGrad_(), xq = x.clone().requiresGrad_();
    const y = plain.forward(xp), yq = par.forward(xq);
    y.mul(w).sum().backward();
    yq.mul(gatherOutput ? w : ownPart(w, group)).sum().backward();
    const tag = `column gatherOutput=${gatherOutput}`;
    d[`${tag} forward`] = maxDiff(yq, gatherOutput ? y : ownPart(y, group));
    d[`${tag} grad x`] = maxDiff(xq.grad, xp.grad);
    gradDiffs(plain, par, d, tag);
  }
  for (const inputIsParallel of [false, true]) {
    const plain = new nn.Linear(8, 6, f64);
    const par = new tp.RowParallelLinear(8, 6, { group, inputIsParallel, source: plain });
    const x = seeded([3, 8]), w = seeded([3, 6]);
    const xp = x.clone().requiresGrad_();
    const xq = (inputIsParallel ? ownPart(x, group).contiguous() : x.clone()).requiresGrad_();
    const y = plain.forward(xp), yq = par.forward(xq);
    y.mul(w).sum().backward();
    yq.mul(w).sum().backward();
    const tag = `row inputIsParallel=${inputIsParallel}`;
    d[`${tag} forward`] = maxDiff(yq, y);
    d[`${tag} grad x`] = maxDiff(xq.grad, inputIsParallel ? ownPart(xp.grad, group) : xp.grad);
    gradDiffs(plain, par, d, tag);
  }
  {
    const plain = new nn.Embedding(8, 5, f64);
    const par = new tp.VocabParallelEmbedding(8, 5, { group, source: plain });
    const ids = kiln.tensor([[0, 7, 3], [4, 4, 1]], { dtype: 'int64' }), w = seeded([2, 3, 5]);
    const y = plain.forward(ids), yq = par.forward(ids);
    y.mul(w).sum().backward();
    yq.mul(w).sum().backward();
    d['embedding forward'] = maxDiff(yq, y);
    gradDiffs(plain, par, d, 'embedding');
  }
  for (const reduction of ['mean', 'sum', 'none']) {
    const logits = seeded([6, 8]).mul(3), w = seeded([6]);
    const targets = kiln.tensor([0, 7, -100, 3, 4, 5], { dtype: 'int64' });
    const lp = logits.clone().requiresGrad_(), lq = ownPart(logits, group).contiguous().requiresGrad_();
    const loss = nn.crossEntropy(lp, targets, { reduction }), lossq = tp.vocabParallelCrossEntropy(lq, targets, group, { reduction });
    (reduction === 'none' ? loss.mul(w) : loss).sum().backward();
    (reduction === 'none' ? lossq.mul(w) : lossq).sum().backward();
    d[`crossEntropy ${reduction} forward`] = maxDiff(lossq, loss);
    d[`crossEntropy ${reduction} grad logits`] = maxDiff(lq.grad, ownPart(lp.grad, group));
  }
  {
    const plain = new nn.MultiheadAttention(8, 4, f64);
    const par = new tp.ParallelSelfAttention(8, 4, { group, source: plain });
    const mask = nn.causalMask(5), x = seeded([2, 5, 8]), w = seeded([2, 5, 8]);
    const xp = x.clone().requiresGrad_(), xq = x.clone().requiresGrad_();
    const y = plain.forward(xp, xp, xp, { attnMask: mask }).output, yq = par.forward(xq, mask);
    y.mul(w).sum().backward();
    yq.mul(w).sum().backward();
    d['attention forward'] = maxDiff(yq, y);
    d['attention grad x'] = maxDiff(xq.grad, xp.grad);
    gradDiffs(plain, par, d, 'attention');
  }
  const gpt = new nn.GPT({ vocabSize: 16, blockSize: 6, nLayer: 2, nHead: 4, nEmbd: 8 }).double();
  {
    const plain = gpt.blocks.at(0);
    const par = new tp.ParallelBlock(plain, group);
    const mask = nn.causalMask(6), x = seeded([2, 6, 8]), w = seeded([2, 6, 8]);
    const xp = x.clone().requiresGrad_(), xq = x.clone().requiresGrad_();
    const y = plain.forward(xp, mask), yq = par.forward(xq, mask);
    y.mul(w).sum().backward();
    yq.mul(w).sum().backward();
    d['block forward'] = maxDiff(yq, y);
    d['block grad x'] = maxDiff(xq.grad, xp.grad);
    gradDiffs(plain, par, d, 'block');
    gpt.zeroGrad();
  }
  {
    const par = tp.parallelize(gpt, group);
    const idx = kiln.randint(0, 16, [2, 6], { dtype: 'int64' }), targets = kiln.randint(0, 16, [2, 6], { dtype: 'int64' });
    const { logits, loss } = gpt.forward(idx, targets);
    const q = par.forward(idx, targets);
    loss.backward();
    q.loss.backward();
    d['gpt logits'] = maxDiff(q.logits, ownPart(logits, group));
    d['gpt loss'] = maxDiff(q.loss, loss);
    gradDiffs(gpt, par, d, 'gpt');
    // Clipping: the same total norm (2 and infinity) and the same scaled gradients.
    d['clip 2-norm'] = maxDiff(tp.clipGradNorm(par, 0.05), optim.clipGradNorm(gpt.parameters(), 0.05));
    d['clip inf-norm'] = maxDiff(tp.clipGradNorm(par, 0.001, Infinity), optim.clipGradNorm(gpt.parameters(), 0.001, Infinity));
    gradDiffs(gpt, par, d, 'gpt clipped');
    // Saving gathers the plain state dict; loading it back cuts it again.
    const full = tp.gatherStateDict(par);
    d['gathered state dict'] = Math.max(...[...gpt.stateDict()].map(([k, t]) => maxDiff(full.get(k), t)));
    const again = tp.parallelize(new nn.GPT(gpt.config).double(), group);
    again.loadStateDict(full);
    d['reloaded state dict'] = Math.max(...[...par.stateDict()].map(([k, t]) => maxDiff(again.stateDict().get(k), t)));
    const keys = [...full.keys()].join(',') === [...gpt.stateDict().keys()].join(',');
    console.log(JSON.stringify({ rank: dist.rank(), sameKeys: keys }));
  }
  console.log(JSON.stringify({ rank: dist.rank(), diffs: d }));
}

const CONFIG = { vocabSize: 16, blockSize: 8, nLayer: 2, nHead: 4, nEmbd: 16 };

// Global batch of step s: 8 rows of blockSize + 1 tokens from a fixed generator.
function globalBatch(s) {
  const rng = new data.Rng(1234, s);
  const rows = 8, T = CONFIG.blockSize + 1;
  const ids = new Int32Array(rows * T);
  for (let i = 0; i < ids.length; i++) ids[i] = Math.floor(rng.next() * CONFIG.vocabSize);
  return kiln.tidy(() => {
    const t = kiln.tensor(ids, { shape: [rows, T], dtype: 'int64' });
    return [t.narrow(1, 0, CONFIG.blockSize).contiguous(), t.narrow(1, 1, CONFIG.blockSize).contiguous()];
  });
}

async function trainRun(tpGroup, dpGroup) {
  const dtype = cfg.dtype ?? 'float32';
  kiln.manualSeed(7);
  const plain = new nn.GPT(CONFIG).to(dtype);
  const par = tp.parallelize(plain, tpGroup);
  let model = par;
  if (dpGroup) {
    model = new dist.DistributedDataParallel(par, { group: dpGroup, bucketCapMB: 0.01 });
    await model.ready;
  }
  const opts = { lr: 0.001, weightDecay: 0.1 };
  const optPlain = new optim.AdamW(plain.parameters(), opts), optPar = new optim.AdamW(model.parameters(), opts);
  const dp = dpGroup ? dpGroup.size : 1, dpRank = dpGroup ? dpGroup.rank : 0;
  const losses = [], plainLosses = [];
  let traffic = null;
  tpGroup.resetCommStats();
  const tensors = [];
  for (let s = 0; s < cfg.steps; s++) {
    const [x, y] = globalBatch(s);
    const n = x.shape[0] / dp;
    const loss = kiln.tidy(() => {
      const l = model.forward(x.narrow(0, dpRank * n, n).contiguous(), y.narrow(0, dpRank * n, n).contiguous()).loss;
      l.backward();
      return l;
    });
    if (s === 0) traffic = { stats: tpGroup.commStats(), B: n, T: CONFIG.blockSize, E: CONFIG.nEmbd, L: CONFIG.nLayer, itemsize: loss.itemsize };
    if (dpGroup) await model.synchronize();
    optPar.step();
    optPar.zeroGrad();
    losses.push(loss.item());
    kiln.tidy(() => {
      const lp = plain.forward(x, y).loss;
      lp.backward();
      plainLosses.push(lp.item());
    });
    optPlain.step();
    optPlain.zeroGrad();
    for (const t of [x, y, loss]) t.dispose();
    // Live tensors once the optimizers hold their state: steady from the second step on.
    if (s >= 1) tensors.push(kiln.memory().tensors);
  }
  const full = tp.gatherStateDict(par);
  const diff = Math.max(...[...plain.stateDict()].map(([k, t]) => maxDiff(full.get(k), t)));
  console.log(JSON.stringify({ rank: dist.rank(), diff, losses, plainLosses, traffic, tensors: [tensors[0], tensors[tensors.length - 1]] }));
}

function seeded(group) {
  const vals = (t) => Array.from(t.dataSync());
  kiln.manualSeed(200 + group.rank);
  const row = new tp.RowParallelLinear(4, 2, { group });
  const rowOut = vals(row.forward(kiln.ones([3, 4])));
  const attn = new tp.ParallelSelfAttention(8, 2, { group });
  const attnOut = vals(attn.forward(kiln.ones([1, 3, 8]), nn.causalMask(3)));
  kiln.manualSeed(200);
  const plain = new nn.Linear(4, 2);
  console.log(JSON.stringify({ rank: dist.rank(), rowBias: vals(row.bias), rowOut, attnBias: vals(attn.outProj.bias), attnOut, plainBias: vals(plain.bias) }));
}

async function errors(group) {
  const out = {};
  const attempt = async (name, fn) => {
    try {
      await fn();
      out[name] = 'no error';
    } catch (e) {
      out[name] = `${e.name}: ${e.message}`;
    }
  };
  await attempt('column not divisible', () => new tp.ColumnParallelLinear(4, 5, { group }));
  await attempt('row not divisible', () => new tp.RowParallelLinear(5, 4, { group }));
  await attempt('embedding not divisible', () => new tp.VocabParallelEmbedding(7, 4, { group }));
  await attempt('attention heads not divisible', () => new tp.ParallelSelfAttention(6, 3, { group }));
  await attempt('gpt vocab not divisible', () => tp.parallelize(new nn.GPT({ vocabSize: 11, blockSize: 4, nLayer: 1, nHead: 2, nEmbd: 8 }), group));
  await attempt('no group', () => new tp.ColumnParallelLinear(4, 4, { group: null }));
  await attempt('not a group', () => new tp.RowParallelLinear(4, 4, { group: 2 }));
  await attempt('row input size', () => new tp.RowParallelLinear(8, 4, { group, inputIsParallel: true }).forward(kiln.ones([2, 8])));
  await attempt('column input size', () => new tp.ColumnParallelLinear(8, 4, { group }).forward(kiln.ones([2, 6])));
  await attempt('source size', () => new tp.ColumnParallelLinear(8, 4, { group, source: new nn.Linear(8, 6) }));
  await attempt('cross-entropy shapes', () => tp.vocabParallelCrossEntropy(kiln.ones([3, 4]), kiln.zeros([2], { dtype: 'int64' }), group));
  await attempt('embedding id out of range', () => new tp.VocabParallelEmbedding(8, 4, { group }).forward(kiln.tensor([1, 8], { dtype: 'int64' })));
  await attempt('target out of range', () => tp.vocabParallelCrossEntropy(kiln.ones([2, 4]), kiln.tensor([-100, 9], { dtype: 'int64' }), group));
  await attempt('layout not dividing the world', () => tp.newGroups(3));
  console.log(JSON.stringify({ rank: dist.rank(), errors: out }));
}

(async () => {
  await dist.initProcessGroup({ backend: 'gloo', timeoutMs: 60000 });
  const rank = dist.rank();
  const { tp: tpGroup, dp: dpGroup } = await tp.newGroups(cfg.tp ?? dist.worldSize());
  if (cfg.mode === 'layers') layers(tpGroup);
  else if (cfg.mode === 'train') await trainRun(tpGroup, dpGroup);
  else if (cfg.mode === 'seeded') seeded(tpGroup);
  else await errors(tpGroup);
  if (cfg.mode === 'errors') {
    // A destroyed group is refused by name.
    dist.destroyProcessGroup(tpGroup);
    try {
      new tp.ColumnParallelLinear(4, 4, { group: tpGroup });
    } catch (e) {
      console.log(JSON.stringify({ rank, destroyed: `${e.name}: ${e.message}` }));
    }
  }
  dist.destroyProcessGroup();
})().catch((e) => {
  console.error(`rank ${process.env.RANK}: ${e.stack}`);
  process.exit(1);
});
