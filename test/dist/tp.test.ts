// Tensor parallelism over Gloo: every TP layer, the TP block and the TP GPT equal the plain ones in
// forward and gradients on 2 and 4 ranks (float64, max abs difference under 1e-12); a TP GPT trained
// 10 AdamW steps ends with the plain model's parameters (float32 under 1e-5, float64 under 1e-12),
// alone and as 2 TP x 2 DP under DDP on the concatenated batch; the TP group carries the analytic
// number of bytes; bad sizes, groups and inputs are named; layers built fresh on ranks seeded
// differently hold the same replicated biases and give the same outputs. In this process (a world of one):
// Work.waitSync and the byte counter.
import t, { Test } from 'tap';
import * as kiln from '../../lib';
import { freePort, runRanks } from './helpers';

const { dist } = kiln;
const gloo = dist.isBackendAvailable('gloo');
const skip = !gloo && 'built without Gloo';

async function ranks(t: Test, world: number, cfg: object): Promise<any[][]> {
  const rs = await runRanks('tp.js', world, [JSON.stringify(cfg)]);
  for (const r of rs) t.equal(r.code, 0, `rank ${r.rank} of ${world} exits 0 ${r.stderr}`);
  return rs.map((r) => r.json);
}

t.test('Work.waitSync and commStats in a world of one', { skip }, async (t) => {
  await dist.initProcessGroup({ rank: 0, worldSize: 1, masterPort: await freePort(), timeoutMs: 10000 });
  t.teardown(() => dist.destroyProcessGroup());
  const g = dist.worldGroup();
  g.resetCommStats();
  const x = kiln.ones([3, 4]);
  const w = g.allReduce(x);
  t.equal(w.waitSync(), undefined, 'waitSync returns once the op is done');
  t.ok(w.isCompleted());
  await w;   // awaiting a Work already waited for resolves
  const parts = [kiln.zeros([2])];
  g.allGather(parts, kiln.tensor([5, 6], { dtype: 'float32' })).waitSync();
  t.same(Array.from(parts[0].dataSync()), [5, 6], 'a list allGather copies out under waitSync');
  g.broadcast(kiln.ones([5], { dtype: 'float64' }), 0).waitSync();
  t.same(g.commStats(), { allReduce: { calls: 1, bytes: 48 }, allGather: { calls: 1, bytes: 8 }, broadcast: { calls: 1, bytes: 40 } });
  g.resetCommStats();
  t.same(g.commStats(), {});

  // Size one: the TP layers are the plain ones.
  kiln.manualSeed(3);
  const plain = new kiln.nn.GPT({ vocabSize: 8, blockSize: 4, nLayer: 1, nHead: 2, nEmbd: 8 });
  const par = dist.tp.parallelize(plain, g);
  const idx = kiln.tensor([[1, 2, 3, 4]], { dtype: 'int64' });
  const a = plain.forward(idx, idx).loss!, b = par.forward(idx, idx).loss!;
  t.ok(Math.abs(a.item() - b.item()) < 1e-6, `one rank: loss ${b.item()} equals ${a.item()}`);
  t.same([...par.stateDict().keys()], [...plain.stateDict().keys()], 'the plain parameter names');
  t.match(par.toString(), /ColumnParallelLinear\(inFeatures=8, outFeatures=8 \(8 on rank 0 of 1\)/);
});

t.test('TP layers, block and GPT equal the plain ones (float64)', { skip }, async (t) => {
  for (const world of [2, 4]) {
    const json = await ranks(t, world, { mode: 'layers' });
    for (const [rank, lines] of json.entries()) {
      const diffs: Record<string, number> = lines.find((j) => j.diffs).diffs;
      const worst = Object.entries(diffs).sort((x, y) => y[1] - x[1])[0];
      t.ok(worst[1] < 1e-12, `${world} ranks, rank ${rank}: ${Object.keys(diffs).length} forward/gradient comparisons, worst ${worst[0]} ${worst[1].toExponential(2)} < 1e-12`);
      t.ok(Object.keys(diffs).some((k) => k.startsWith('gpt grad blocks.1.attn.inProjWeight')), 'the GPT gradients are compared');
      t.ok(lines.find((j) => 'sameKeys' in j).sameKeys, 'gatherStateDict gives the plain keys');
    }
  }
});

t.test('a TP GPT trains to the plain parameters; 2 TP x 2 DP on the concatenated batch', { skip }, async (t) => {
  const runs: Array<[string, number, object, number]> = [
    ['TP 2, float32', 2, {}, 1e-5],
    ['TP 4, float32', 4, {}, 1e-5],
    ['TP 2, float64', 2, { dtype: 'float64' }, 1e-12],
    ['2 TP x 2 DP, float32', 4, { tp: 2 }, 1e-5],
    ['2 TP x 2 DP, float64', 4, { tp: 2, dtype: 'float64' }, 1e-12],
  ];
  for (const [name, world, extra, tol] of runs) {
    const json = await ranks(t, world, { mode: 'train', steps: 10, ...extra });
    const res = json.map((lines) => lines.find((j) => 'diff' in j));
    for (const r of res) t.ok(r.diff < tol, `${name}, rank ${r.rank}: max abs parameter difference ${r.diff.toExponential(2)} < ${tol}`);
    t.ok(res[0].plainLosses[9] < res[0].plainLosses[0], `${name}: the loss falls (${res[0].plainLosses[0].toFixed(4)} -> ${res[0].plainLosses[9].toFixed(4)})`);
    // The TP group's traffic in one step: per block 2 all-reduces of B*T*E forward and 2 backward,
    // one each way for the embedding and the output head, and 3 of B*T in the cross-entropy.
    const { stats, B, T, E, L, itemsize } = res[0].traffic;
    const expect = ((4 * L + 2) * B * T * E + 3 * B * T) * itemsize;
    t.same(stats, { allReduce: { calls: 4 * L + 5, bytes: expect } }, `${name}: ${expect} bytes in ${4 * L + 5} all-reduces per step`);
    // Without DDP every op is synchronous, so the count is exact (DDP's settle at the event loop's pace).
    if (!('tp' in extra)) t.equal(res[0].tensors[1], res[0].tensors[0], `${name}: ${res[0].tensors[0]} live tensors after step 2 and after step 10`);
    if ('tp' in extra) t.notSame(res[0].losses, res[2].losses, 'the DP groups trained on different halves of the batch');
  }
});

t.test('ranks seeded differently: replicated parameters broadcast from group rank 0', { skip }, async (t) => {
  const [a, b] = (await ranks(t, 2, { mode: 'seeded' })).map((lines) => lines.find((j) => j.rowBias));
  for (const k of ['rowBias', 'rowOut', 'attnBias', 'attnOut']) t.same(b[k], a[k], `${k}: the same on both ranks`);
  t.same(a.rowBias, a.plainBias, "the row layer's bias is rank 0's draw");
  t.ok(a.rowBias.some((v: number) => v !== 0), 'a drawn bias, not zeros');
});

t.test('bad sizes, groups and inputs name the layer and the sizes', { skip }, async (t) => {
  const json = await ranks(t, 2, { mode: 'errors' });
  const errors: Record<string, string> = json[0].find((j) => j.errors).errors;
  const want: Record<string, RegExp> = {
    'column not divisible': /^ValueError: ColumnParallelLinear: outFeatures 5 is not divisible by the tensor-parallel size 2/,
    'row not divisible': /^ValueError: RowParallelLinear: inFeatures 5 is not divisible by the tensor-parallel size 2/,
    'embedding not divisible': /^ValueError: VocabParallelEmbedding: numEmbeddings 7 is not divisible .* pad the vocabulary to a multiple of 2 \(e\.g\. 8\)/,
    'attention heads not divisible': /^ValueError: ParallelSelfAttention: numHeads 3 is not divisible by the tensor-parallel size 2/,
    'gpt vocab not divisible': /^ValueError: ParallelGPT: config\.vocabSize 11 is not divisible .* 12\)/,
    'no group': /^ValueError: ColumnParallelLinear: needs \{ group \}.*got null/,
    'not a group': /^ValueError: RowParallelLinear: group must be a ProcessGroup/,
    'row input size': /^ShapeError: RowParallelLinear: expects inputs with last dim 4 \(inFeatures 8 \/ tensor-parallel size 2, inputIsParallel\), got shape \[2, 8\]/,
    'column input size': /^ShapeError: ColumnParallelLinear: expects inputs with last dim 8, got shape \[2, 6\]/,
    'source size': /^ShapeError: ColumnParallelLinear: source must be an nn\.Linear\(8, 4\), got nn\.Linear\(8, 6\)/,
    'cross-entropy shapes': /^ShapeError: vocabParallelCrossEntropy: localLogits \[3, 4\] and targets \[2\] do not fit/,
    'embedding id out of range': /^IndexError: VocabParallelEmbedding: id 8 is out of range: expected 0 to 7/,
    'target out of range': /^IndexError: vocabParallelCrossEntropy: target 9 is out of range: expected 0 to 7 \(or ignoreIndex -100\)/,
    'layout not dividing the world': /^ValueError: tp\.newGroups: tensorParallelSize must be a positive integer dividing the world size 2, got 3/,
  };
  t.same(Object.keys(errors).sort(), Object.keys(want).sort());
  for (const [k, re] of Object.entries(want)) t.match(errors[k], re, k);
  t.match(json[1].find((j) => j.destroyed).destroyed, /^DistError: ColumnParallelLinear: the group \(rank 1 of 2\) was destroyed/);
});
