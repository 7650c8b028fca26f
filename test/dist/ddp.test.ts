// Data parallel on 2 and 4 processes over Gloo: a small GPT trained 10 steps with DDP ends with the
// parameters of one process trained on the concatenated batches (max abs difference under 1e-5);
// so does gradient accumulation under noSync, ZeroRedundancyOptimizer (with half the optimizer state
// per rank), and the Trainer with both, whose rank-0 checkpoint resumes in one process.
import t, { Test } from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as kiln from '../../lib';
import { maxAbsDiff, runRanks, trainPlain } from './helpers';

const gloo = kiln.dist.isBackendAvailable('gloo');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-ddp-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const BASE = { steps: 10, batch: 8, lr: 0.001 };
const CONFIG = { vocabSize: 11, blockSize: 8, nLayer: 2, nHead: 2, nEmbd: 16 };   // as in workers/ddp_train.js

function plain(name: string, extra: object = {}): string {
  return trainPlain(path.join(dir, `${name}.safetensors`), { ...BASE, ...extra });
}

async function ddp(t: Test, name: string, world: number, extra: object): Promise<{ out: string; json: any[][] }> {
  const out = path.join(dir, `${name}.safetensors`);
  const rs = await runRanks('ddp_train.js', world, [JSON.stringify({ ...BASE, ...extra, out })]);
  for (const r of rs) t.equal(r.code, 0, `${name}: rank ${r.rank} exits 0 ${r.stderr}`);
  return { out, json: rs.map((r) => r.json) };
}

t.test('DDP equals one process on the concatenated batch', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const ref = plain('plain');
  for (const world of [2, 4]) {
    const { out, json } = await ddp(t, `ddp${world}`, world, {});
    const d = maxAbsDiff(ref, out);
    t.ok(d < 1e-5, `${world} processes: max abs difference ${d.toExponential(2)} < 1e-5`);
    t.notSame(json[0][0].losses, json[1][0].losses, 'the ranks trained on different data');
  }
  // The same run with a bucket cap large enough for one bucket, and with the default cap.
  const { out } = await ddp(t, 'ddp2-onebucket', 2, { bucketCapMB: 100 });
  t.ok(maxAbsDiff(ref, out) < 1e-5, 'one bucket');
});

t.test('gradient accumulation under noSync equals the large batch', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const ref = plain('plain-acc');
  const { out } = await ddp(t, 'ddp-acc', 2, { accum: 2 });
  const d = maxAbsDiff(ref, out);
  t.ok(d < 1e-5, `2 processes x 2 micro-batches: ${d.toExponential(2)}`);
});

t.test('ZeroRedundancyOptimizer equals AdamW, with half the state per rank', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const ref = plain('plain-zero');
  const { out, json } = await ddp(t, 'zero2', 2, { zero: true });
  const d = maxAbsDiff(ref, out);
  t.ok(d < 1e-5, `ZeRO-1 on 2 processes: ${d.toExponential(2)}`);
  const mem = json.map((lines) => lines.find((j) => j.memory).memory);
  const total = mem.reduce((n, m) => n + m.ownedElements, 0);
  const params = new kiln.nn.GPT(CONFIG).numParameters();   // the tied embedding once
  t.equal(total, params, 'every parameter has one owner');
  for (const m of mem) {
    t.ok(m.ownedElements < 0.6 * params, `rank ${m.rank} owns ${m.ownedElements} of ${params} elements`);
    t.equal(m.stateBytes, m.ownedElements * 4 * 2, `rank ${m.rank} holds AdamW's two moments for its share only`);
  }
});

t.test('the Trainer with DDP and ZeRO: equal results, rank 0 writes, the checkpoint resumes in one process', { skip: !gloo && 'built without Gloo' }, async (t) => {
  const ref = plain('plain-trainer', { accum: 2 });
  const outDir = path.join(dir, 'run');
  const { out } = await ddp(t, 'trainer', 2, { trainer: true, zero: true, accum: 2, outDir });
  const d = maxAbsDiff(ref, out);
  t.ok(d < 1e-5, `Trainer, ZeRO, 2 micro-batches: ${d.toExponential(2)}`);
  t.same(fs.readdirSync(outDir).sort(), ['checkpoint.safetensors', 'loss.svg', 'metrics.jsonl']);
  t.equal(fs.readFileSync(path.join(outDir, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 10, 'one metrics record per step, from rank 0 only');
  // The checkpoint holds the GPT's own names and the whole (consolidated) AdamW state: it resumes in
  // one process with a plain AdamW.
  const model = new kiln.nn.GPT(CONFIG);
  const opt = new kiln.optim.AdamW(model.parameters(), { lr: 0.001, weightDecay: 0.1 });
  const trainer = new kiln.train.Trainer({ model, optimizer: opt, progress: 'none' });
  const x = kiln.randint(0, 11, [4, 8]);
  const r = await trainer.fit({ train: [[x, x]], steps: 11, resume: path.join(outDir, 'checkpoint.safetensors'), loss: (m, [a, b]) => m.forward(a, b).loss! });
  t.equal(r.step, 11);
  t.equal(opt.state.size, model.parameters().length, 'every parameter has its AdamW state back');
  const firstState = [...opt.state.values()][0];
  t.equal(firstState.step, 11);
});
