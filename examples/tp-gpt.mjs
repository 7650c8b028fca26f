// Tensor parallelism: one GPT split across the ranks of a group (attention heads, MLP features and
// the vocabulary), trained on the toy language of `kiln train`; with --tp smaller than the world,
// the tensor-parallel groups also train data parallel (DDP over the ranks that hold the same shards).
// At the end rank 0 gathers the plain weights, saves them, and samples from an ordinary nn.GPT.
// Run: kiln launch --nproc-per-node 2 examples/tp-gpt.mjs [--steps 300] [--tp 2] [--out tp-gpt.safetensors]
//      (4 processes with --tp 2: 2-way tensor parallel x 2-way data parallel)
import { parseArgs } from 'node:util';
import * as kiln from 'kiln';

const { nn, optim, data, dist, train, io } = kiln;
const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '300' },
    tp: { type: 'string' },
    out: { type: 'string', default: 'tp-gpt.safetensors' },
  },
});

await dist.initProcessGroup({ backend: 'gloo' });
const world = dist.worldSize(), rank = dist.rank();
const tpSize = Number(args.tp ?? world);
const dpSize = world / tpSize;
// Ranks 0..tp-1 form the first tensor-parallel group, and so on; the data-parallel groups join the
// ranks at the same place in each.
const { tp: tpGroup, dp: dpGroup } = await dist.tp.newGroups(tpSize);
const log = (s) => rank === 0 && console.log(s);

// The corpus, by characters. The vocabulary is padded to a multiple of the tensor-parallel size
// (the extra classes are never targets and learn to be unlikely).
const text = train.toyCorpus({ lines: 20000 });
const tokenizer = data.CharTokenizer.fromText(text);
const ids = Int32Array.from(tokenizer.encode(text));
const vocabSize = Math.ceil(tokenizer.vocabSize / tpSize) * tpSize;
const config = { vocabSize, blockSize: 32, nLayer: 2, nHead: 4, nEmbd: 64 };

// The same seed everywhere: the plain model each rank splits is the same one.
kiln.manualSeed(0);
const model = dist.tp.parallelize(new nn.GPT(config), tpGroup);
let trained = model;
if (dpGroup) {
  trained = new dist.DistributedDataParallel(model, { group: dpGroup });
  await trained.ready;
}
log(`${world} processes: ${tpSize}-way tensor parallel x ${dpSize}-way data parallel; ` +
  `${model.numParameters()} parameters on each rank of ${new nn.GPT(config).numParameters()}`);

// Batches of random windows; the ranks of a tensor-parallel group must see the same batch, each
// data-parallel group its own.
const rng = new data.Rng(1, dpGroup ? dpGroup.rank : 0);
const batch = (n) => {
  const T = config.blockSize, x = new Int32Array(n * T), y = new Int32Array(n * T);
  for (let b = 0; b < n; b++) {
    const s = Math.floor(rng.next() * (ids.length - T - 1));
    x.set(ids.subarray(s, s + T), b * T);
    y.set(ids.subarray(s + 1, s + T + 1), b * T);
  }
  return [kiln.tensor(x, { shape: [n, T], dtype: 'int64' }), kiln.tensor(y, { shape: [n, T], dtype: 'int64' })];
};

const steps = Number(args.steps);
const opt = new optim.AdamW(trained.parameters(), { lr: 3e-3, betas: [0.9, 0.99], weightDecay: 0.1 });
const sched = new optim.WarmupCosineLR(opt, { warmupSteps: Math.min(30, steps), totalSteps: steps, minLrRatio: 0.1 });
const t0 = performance.now();
for (let step = 1; step <= steps; step++) {
  const loss = kiln.tidy(() => {
    const [x, y] = batch(32 / dpSize);
    const l = trained.forward(x, y).loss;
    l.backward();
    return l.item();
  });
  if (dpGroup) await trained.synchronize();
  // The whole model's gradient norm: split gradients summed over the group, replicated ones once.
  dist.tp.clipGradNorm(model, 1).dispose();
  opt.step();
  opt.zeroGrad();
  sched.step();
  if (step % 50 === 0 || step === 1) log(`step ${step}: loss ${loss.toFixed(3)} (${((performance.now() - t0) / step).toFixed(1)} ms/step)`);
}

// Saving gathers the shards into the plain model's tensors (every rank of the group takes part).
const full = dist.tp.gatherStateDict(model, { dst: 0 });
if (rank === 0) {
  io.saveSafetensors(args.out, full);
  const plain = new nn.GPT(config);
  plain.loadStateDict(full);
  console.log(`saved ${args.out}; samples from an ordinary nn.GPT with those weights:`);
  for (const prompt of ['the cat ', 'two ', '4 + 3 =']) {
    const out = plain.generate(kiln.tensor([tokenizer.encode(prompt)]), 40, { temperature: 0.8 });
    // A padding class is no character: were one ever sampled, it is dropped.
    const line = tokenizer.decode(Array.from(out.dataSync(), Number).filter((i) => i < tokenizer.vocabSize)).split('\n')[0];
    console.log(`  ${train.checkToyLine(line).valid ? 'ok ' : 'bad'} ${line}`);
  }
}
for (const t of full.values()) t.dispose();
dist.destroyProcessGroup();
