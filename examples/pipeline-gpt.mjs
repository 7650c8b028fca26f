// A GPT trained with pipeline parallelism: its blocks split into one stage per process (the first
// stage also holds the embeddings, the last the head and the loss), micro-batches flowing through
// the stages on a GPipe or 1F1B schedule. Every process builds the same model and draws the same
// batches; each keeps and updates only its stage. At the end the stages gather a plain checkpoint
// on rank 0, which loads into an ordinary one-process GPT to sample from.
// Run (after `npm install`, on a build with Gloo):
//   kiln launch --nproc-per-node 2 examples/pipeline-gpt.mjs [--steps 300] [--micro-batches 4] [--schedule 1f1b] [--out pipeline-run]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as kiln from 'kiln';

const { nn, optim, data, dist, io, train } = kiln;
const { values: args } = parseArgs({
  options: {
    steps: { type: 'string', default: '300' }, 'micro-batches': { type: 'string', default: '4' },
    schedule: { type: 'string', default: '1f1b' }, out: { type: 'string', default: 'pipeline-run' },
  },
});
const steps = Number(args.steps), microBatches = Number(args['micro-batches']);

await dist.initProcessGroup({ backend: 'gloo' });
const rank = dist.rank();

// The same corpus, tokenizer and model on every rank (the seed makes the weights agree).
const text = train.toyCorpus({ lines: 5000 });
const tokenizer = data.CharTokenizer.fromText(text);
const ids = tokenizer.encode(text);
const blockSize = 32, batchSize = 16;
kiln.manualSeed(0);
const model = new nn.GPT({ vocabSize: tokenizer.vocabSize, blockSize, nLayer: 4, nHead: 4, nEmbd: 64 });
const total = model.numParameters();

const pipe = dist.pipeline(model, { microBatches, schedule: args.schedule });
const mine = pipe.parameters().reduce((n, p) => n + p.numel, 0);
console.log(`stage ${pipe.stage} of ${pipe.stages}: ${pipe.partition[pipe.stage].join(', ')} (${mine} of ${total} parameters)`);
const opt = new optim.AdamW(pipe.parameters(), { lr: 3e-3, weightDecay: 0.1 });

// Batch s: batchSize random windows of the corpus, the same on every rank.
function batch(s) {
  const rng = new data.Rng(1, s);
  const x = new Int32Array(batchSize * blockSize), y = new Int32Array(batchSize * blockSize);
  for (let b = 0; b < batchSize; b++) {
    const at = Math.floor(rng.next() * (ids.length - blockSize - 1));
    for (let t = 0; t < blockSize; t++) {
      x[b * blockSize + t] = ids[at + t];
      y[b * blockSize + t] = ids[at + t + 1];
    }
  }
  return [kiln.tensor(x, { shape: [batchSize, blockSize], dtype: 'int64' }), kiln.tensor(y, { shape: [batchSize, blockSize], dtype: 'int64' })];
}

let idle = 0, wall = 0;
for (let s = 0; s < steps; s++) {
  const [x, y] = batch(s);
  const r = await pipe.step(x, y);
  opt.step();
  opt.zeroGrad();
  x.dispose();
  y.dispose();
  idle += r.idleMs;
  wall += r.stepMs;
  if (r.loss !== null && (s % 50 === 0 || s === steps - 1)) console.log(`step ${s}: loss ${r.loss.toFixed(3)}`);
}
console.log(`stage ${pipe.stage}: ${(wall / steps).toFixed(1)} ms/step, idle ${(100 * idle / wall).toFixed(0)}% (an ideal pipeline idles ${(100 * pipe.bubbleFraction).toFixed(0)}%)`);

// A plain checkpoint on rank 0, loaded into an ordinary GPT.
const sd = await pipe.stateDict();
if (rank === 0) {
  fs.mkdirSync(args.out, { recursive: true });
  const file = path.join(args.out, 'model.safetensors');
  io.saveSafetensors(file, sd);
  const plain = new nn.GPT(model.config);
  plain.loadStateDict(io.loadSafetensors(file).tensors);
  const out = plain.generate(kiln.tensor([tokenizer.encode('the cat ')]), 40, { temperature: 0.8 });
  console.log(`wrote ${file}; a one-process GPT loaded from it says: ${tokenizer.decode(Array.from(out.dataSync(), Number)).split('\n')[0]}`);
}
dist.destroyProcessGroup();
