// Pipeline parallelism over Gloo: a small GPT (4 blocks) split into 2 and 4 stages with the GPipe
// and 1F1B schedules gives the unsplit model's first-step gradients (float32: max abs difference
// under 1e-6; float64: under 1e-13) and, after 10 AdamW steps, its parameters (under 1e-5; float64
// 1e-12); the gathered checkpoint equals the unsplit model's state dict and loads back into the
// stages. A list of modules pipelines the same way. With the embeddings (wte tied to the head) and
// the lower blocks frozen, so whole first stages train nothing, the pipeline still equals the
// unsplit model, gives frozen parameters no .grad and leaves wte as it was under AdamW's weight
// decay. In a world of one: the schedules' order, the bubble formula, and the errors for bad
// partitions, batches and groups.
import t, { Test } from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib';
import { pipelineSchedule } from '../../lib/dist/pipeline';
import { freePort, runRanks } from './helpers';
import { spawnSync } from 'child_process';

const { dist, nn } = kiln;
const gloo = dist.isBackendAvailable('gloo');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pipe-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const WORKER = path.join(__dirname, 'workers', 'pipeline_train.js');

function load(file: string): Map<string, kiln.Tensor> {
  return kiln.io.loadSafetensors(file).tensors;
}

/** Max abs difference over b's tensors against a's of the same name (a stage's lmHead.weight is the plain model's wte.weight, tied). */
function maxDiff(t: Test, a: Map<string, kiln.Tensor>, b: Map<string, kiln.Tensor>): number {
  let m = 0;
  for (const [k, v] of b) {
    const ref = a.get(k) ?? (k === 'lmHead.weight' ? a.get('wte.weight') : undefined);
    if (!ref) {
      t.fail(`${k} is not in the reference`);
      continue;
    }
    m = Math.max(m, kiln.tidy(() => v.sub(ref).abs().max().item()));
  }
  return m;
}

/** The unsplit model trained in one process: its files, and its losses. */
function plain(name: string, extra: object): { ref: string; losses: number[] } {
  const ref = path.join(dir, name);
  const r = spawnSync(process.execPath, [WORKER, JSON.stringify({ out: ref, steps: 10, plain: true, ...extra })], {
    encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '1' }, timeout: 120_000,
  });
  if (r.status !== 0) throw new Error(`the one-process reference failed: ${r.stderr}`);
  return { ref, losses: JSON.parse(r.stdout.trim().split('\n').pop()!).losses };
}

async function piped(t: Test, name: string, stages: number, extra: object): Promise<{ out: string; json: any[] }> {
  const out = path.join(dir, name);
  const rs = await runRanks('pipeline_train.js', stages, [JSON.stringify({ out, steps: 10, stages, microBatches: 4, ...extra })]);
  for (const r of rs) t.equal(r.code, 0, `${name}: rank ${r.rank} exits 0 ${r.stderr}`);
  return { out, json: rs.map((r) => r.json[0]) };
}

async function compare(t: Test, { ref, losses }: { ref: string; losses: number[] }, name: string, stages: number, extra: object, tol: { grad: number; param: number }): Promise<{ out: string; json: any[] }> {
  const { out, json } = await piped(t, name, stages, { reload: `${ref}.init`, ...extra });
  const refGrads = load(`${ref}.grads.0`);
  const seen = new Set<string>();
  let g = 0;
  for (let r = 0; r < stages; r++) {
    const grads = load(`${out}.grads.${r}`);
    for (const k of grads.keys()) seen.add(k === 'lmHead.weight' ? 'wte.weight' : k);
    g = Math.max(g, maxDiff(t, refGrads, grads));
  }
  t.same([...seen].sort(), [...refGrads.keys()].sort(), `${name}: every parameter has a gradient on some stage`);
  t.ok(g < tol.grad, `${name}: first-step gradients, max abs difference ${g.toExponential(2)} < ${tol.grad}`);
  const p = maxDiff(t, load(ref), load(out));
  t.ok(p < tol.param, `${name}: parameters after 10 AdamW steps, max abs difference ${p.toExponential(2)} < ${tol.param}`);
  t.equal(maxDiff(t, load(`${ref}.init`), load(`${out}.init`)), 0, `${name}: the gathered initial checkpoint is the unsplit model's`);
  t.same([...load(`${out}.init`).keys()], [...load(`${ref}.init`).keys()], `${name}: with its names in its order`);
  t.equal(maxDiff(t, load(`${ref}.init`), load(`${out}.reload`)), 0, `${name}: the plain checkpoint loads back into the stages`);
  const last = json[stages - 1];
  t.equal(last.losses.length, 10);
  t.ok(last.losses.every((l: number, i: number) => Math.abs(l - losses[i]) < 1e-5), `${name}: the last stage reports the unsplit model's losses`);
  t.equal(json[0].analytic, (stages - 1) / (4 + stages - 1), `${name}: analytic bubble`);
  return { out, json };
}

t.test('a pipelined GPT equals the unsplit model', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const ref = plain('plain', {});
  for (const stages of [2, 4]) {
    for (const schedule of ['gpipe', '1f1b']) {
      await compare(t, ref, `gpt-${stages}-${schedule}`, stages, { schedule }, { grad: 1e-6, param: 1e-5 });
    }
  }
});

t.test('float64: to rounding', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const ref = plain('plain64', { dtype: 'float64' });
  await compare(t, ref, 'gpt64-4-1f1b', 4, { schedule: '1f1b', dtype: 'float64' }, { grad: 1e-13, param: 1e-12 });
});

t.test('a list of modules', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const ref = plain('mlp', { mlp: true });
  await compare(t, ref, 'mlp-2-gpipe', 2, { schedule: 'gpipe', mlp: true }, { grad: 1e-6, param: 1e-5 });
});

t.test('frozen embeddings and lower blocks (whole frozen stages, a frozen tie)', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const ref = plain('frozen', { freeze: true });
  // 2 stages: the first (embedding, blocks 0-1) is all frozen; 4 stages: the first two are.
  for (const [stages, schedule] of [[2, '1f1b'], [4, 'gpipe']] as const) {
    const name = `frozen-${stages}-${schedule}`;
    const { out, json } = await compare(t, ref, name, stages, { schedule, freeze: true }, { grad: 1e-6, param: 1e-5 });
    t.same(json.map((j) => j.frozenGrads), new Array(stages).fill(0), `${name}: no frozen parameter (the tied wte/lmHead included) gets a .grad`);
    t.equal(maxDiff(t, load(`${out}.init`), new Map([['wte.weight', load(out).get('wte.weight')!]])), 0, `${name}: wte unchanged after 10 AdamW steps with weight decay`);
  }
});

t.test('schedules', async (t) => {
  const str = (ops: Array<['F' | 'B', number]>) => ops.map(([k, i]) => `${k}${i}`).join(' ');
  t.equal(str(pipelineSchedule('gpipe', 1, 4, 3)), 'F0 F1 F2 B0 B1 B2');
  t.equal(str(pipelineSchedule('1f1b', 0, 4, 6)), 'F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5');
  t.equal(str(pipelineSchedule('1f1b', 3, 4, 6)), 'F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5');
  t.equal(str(pipelineSchedule('1f1b', 0, 4, 2)), 'F0 F1 B0 B1', 'fewer micro-batches than stages');
  for (const [p, m] of [[2, 4], [4, 4], [4, 9], [3, 2]]) {
    for (let s = 0; s < p; s++) {
      const ops = pipelineSchedule('1f1b', s, p, m);
      let live = 0, peak = 0;
      for (const [k] of ops) peak = Math.max(peak, (live += k === 'F' ? 1 : -1));
      t.equal(ops.length, 2 * m);
      t.ok(peak <= Math.min(p - s, m), `1F1B p=${p} m=${m} stage ${s}: at most ${Math.min(p - s, m)} micro-batches in flight (${peak})`);
    }
  }
  t.equal(dist.bubbleFraction(4, 8), 3 / 11);
});

t.test('bad input', { skip: !gloo && 'built without Gloo' }, async (t) => {
  await dist.initProcessGroup({ rank: 0, worldSize: 1, masterPort: await freePort(), timeoutMs: 10000 });
  t.teardown(() => dist.destroyProcessGroup());
  const gpt = () => new nn.GPT({ vocabSize: 7, blockSize: 4, nLayer: 2, nHead: 1, nEmbd: 8 });
  t.throws(() => dist.pipeline(gpt(), { stages: 3, microBatches: 2 }), { name: 'ValueError', message: /3 stages but the model has 2 blocks/ });
  t.throws(() => dist.pipeline(gpt(), { stages: 2, microBatches: 2 }), { name: 'ValueError', message: /2 stages need a group of 2 ranks, the group has 1/ });
  t.throws(() => dist.pipeline(gpt(), { microBatches: 0 }), { name: 'ValueError', message: /microBatches must be a positive integer/ });
  t.throws(() => dist.pipeline(gpt(), { microBatches: 2, balance: [3] }), { name: 'ValueError', message: /balance \[3\] sums to 3, but the model has 2 blocks/ });
  t.throws(() => dist.pipeline(gpt(), { microBatches: 2, schedule: 'zigzag' as any }), { name: 'ValueError', message: /schedule must be 'gpipe' or '1f1b'/ });
  t.throws(() => dist.pipeline([new nn.Linear(2, 2)], { microBatches: 2 }), { name: 'ValueError', message: /needs options.loss/ });
  t.throws(() => dist.pipeline(gpt(), { microBatches: 2, group: null as any }), { name: 'ValueError', message: /group is null: dist.newGroup returns null on ranks outside the group/ });
  t.throws(() => dist.pipeline(gpt(), { microBatches: 2, group: {} as any }), { name: 'ValueError', message: /group must be a ProcessGroup/ });

  // One stage: micro-batching alone, the same gradients as one backward.
  kiln.manualSeed(3);
  const model = gpt();
  const ref = gpt();
  ref.loadStateDict(model.stateDict());
  const pipe = dist.pipeline(model, { microBatches: 3 });
  const x = kiln.randint(0, 7, [6, 4]);
  await t.rejects(pipe.step(x.narrow(0, 0, 5), x.narrow(0, 0, 5)), { name: 'ShapeError', message: /3 micro-batches do not divide the input's batch: input is \[5, 4\] \(5 rows\)/ });
  await t.rejects(pipe.step(null, x), { name: 'ValueError', message: /stage 0 of 1 needs the input/ });
  const r = await pipe.step(x, x);
  const loss = ref.forward(x, x).loss!;
  loss.backward();
  t.ok(Math.abs(r.loss! - loss.item()) < 1e-6, 'the loss');
  const named = new Map(ref.namedParameters());
  for (const [n, p] of pipe.namedParameters()) t.ok(kiln.allclose(p.grad!, named.get(n)!.grad!, 1e-5, 1e-6), `${n}'s gradient`);
  t.equal(r.bytesSent.activations, 0, 'one stage sends nothing');
  t.equal(pipe.bubbleFraction, 0);
  t.throws(() => pipe.loadStateDict(new Map()), { name: 'ValueError', message: /stage 0 needs keys the state dict lacks: wte.weight, wpe.weight, blocks.0.ln1.weight/ });
});
