// Optimizer state one parameter at a time (paramState / setParamState) and laid out flat per group
// (useFlatState / flatState): aligned ranges, state tensors that are views of the buffers, updates
// identical to per-parameter state, state moved in after steps, stateDict / loadStateDict and
// checkpoints across both layouts, and the errors.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { loadCheckpoint, saveCheckpoint } from '../../lib/io/index';
import * as optim from '../../lib/optim/index';
import { rng } from '../helpers/gradcheck';

const vals = (x: Tensor): number[] => Array.from(x.to('float64').dataSync() as Float64Array);
const SHAPES = [[5], [17], [1, 3], []];

function params(seed: number): Tensor[] {
  const r = rng(seed);
  return SHAPES.map((s) => kiln.tensor(Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () => 2 * r() - 1), { shape: s, requiresGrad: true }));
}

/** Gives every parameter the gradient of step `step` (the same for every run). */
function setGrads(ps: Tensor[], step: number): void {
  const r = rng(100 + step);
  for (const p of ps) {
    p.grad?.dispose();
    p.grad = kiln.tensor(Float32Array.from({ length: p.numel }, () => 2 * r() - 1), { shape: [...p.shape] });
  }
}

function run(opt: optim.Optimizer<any>, ps: Tensor[], from: number, to: number): void {
  for (let s = from; s < to; s++) {
    setGrads(ps, s);
    opt.step();
  }
}

const MAKERS: Array<[string, (ps: Tensor[]) => optim.Optimizer<any>]> = [
  ['AdamW', (ps) => new optim.AdamW(ps, { lr: 0.05 })],
  ['Adam (AMSGrad)', (ps) => new optim.Adam(ps, { lr: 0.05, amsgrad: true })],
  ['SGD (momentum, dampening)', (ps) => new optim.SGD(ps, { lr: 0.1, momentum: 0.9, dampening: 0.3 })],
];

t.test('a flat group: aligned ranges, one buffer per state kind, state tensors that are views of it', async (t) => {
  const ps = params(1);
  const opt = new optim.AdamW(ps, { lr: 0.05 });
  t.equal(opt.flatState(0), null, 'per-parameter state by default');
  opt.useFlatState(0);
  const before = opt.flatState(0)!;
  t.same(before.ranges.map((r) => [r.offset, r.numel]), [[0, 5], [16, 17], [48, 3], [64, 1]], 'ranges start at multiples of 16');
  t.equal(before.numel, 80);
  t.same(Object.keys(before.buffers), [], 'buffers appear with the state');
  t.ok(before.ranges.every((r, i) => r.param === ps[i]), 'in the group\'s order');
  run(opt, ps, 0, 2);
  const flat = opt.flatState(0)!;
  t.same(Object.keys(flat.buffers).sort(), ['expAvg', 'expAvgSq']);
  for (const [kind, buf] of Object.entries(flat.buffers)) {
    t.same(buf.shape, [80], `${kind} is one flat buffer`);
    const all = vals(buf);
    for (const r of flat.ranges) {
      t.same(vals(opt.paramState(r.param)![kind] as Tensor), all.slice(r.offset, r.offset + r.numel), `${kind} of the ${r.numel}-element parameter is its range`);
    }
  }
  kiln.noGrad(() => flat.buffers.expAvg.fill_(0.25));
  t.same(vals(opt.paramState(ps[1])!.expAvg as Tensor), new Array(17).fill(0.25), 'writes to the buffer show through the state');
  t.equal(opt.paramState(ps[3])!.step, 2);
});

for (const [name, make] of MAKERS) {
  t.test(`${name}: flat state steps exactly as per-parameter state, also when flattened after steps`, async (t) => {
    const a = params(2), b = params(2), c = params(2);
    const oa = make(a), ob = make(b), oc = make(c);
    ob.useFlatState();
    run(oa, a, 0, 3);
    run(ob, b, 0, 3);
    run(oc, c, 0, 3);
    oc.useFlatState(0);
    run(oa, a, 3, 6);
    run(ob, b, 3, 6);
    run(oc, c, 3, 6);
    t.same(b.map(vals), a.map(vals), 'flat from the start');
    t.same(c.map(vals), a.map(vals), 'flattened after three steps');
    t.ok(Object.keys(oc.flatState(0)!.buffers).length > 0, 'the moved state lives in the buffers');
  });
}

t.test('stateDict and checkpoints carry state between flat and per-parameter optimizers', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-flat-'));
  const model = new kiln.nn.Linear(6, 3);
  const opt = new optim.AdamW(model.parameters(), { lr: 0.05 });
  opt.useFlatState();
  run(opt, model.parameters(), 0, 2);
  const file = path.join(dir, 'ckpt.safetensors');
  saveCheckpoint(file, { model, optimizer: opt });
  const twin = new kiln.nn.Linear(6, 3);
  const plain = new optim.AdamW(twin.parameters(), { lr: 0.05 });
  loadCheckpoint(file, { model: twin, optimizer: plain });
  const flatAgain = new optim.AdamW(new kiln.nn.Linear(6, 3).parameters(), { lr: 0.05 });
  flatAgain.useFlatState();
  flatAgain.loadStateDict(plain.stateDict());
  const q = flatAgain.paramGroups[0].params;
  kiln.noGrad(() => q.forEach((p, i) => p.copy_(model.parameters()[i])));
  run(opt, model.parameters(), 2, 4);
  run(plain, twin.parameters(), 2, 4);
  run(flatAgain, q, 2, 4);
  t.same(twin.parameters().map(vals), model.parameters().map(vals), 'flat -> checkpoint -> per-parameter resumes identically');
  t.same(q.map(vals), model.parameters().map(vals), 'per-parameter -> stateDict -> flat resumes identically');
  t.same(Object.keys(flatAgain.flatState(0)!.buffers).sort(), ['expAvg', 'expAvgSq'], 'loaded into the flat buffers');
  fs.rmSync(dir, { recursive: true });
});

t.test('paramState and setParamState address one parameter', async (t) => {
  const ps = params(3), qs = params(3);
  const a = new optim.Adam(ps, { lr: 0.05 }), b = new optim.Adam(qs, { lr: 0.05 });
  b.useFlatState();
  t.equal(a.paramState(ps[0]), undefined, 'no state before the first step');
  run(a, ps, 0, 2);
  for (let i = 0; i < ps.length; i++) b.setParamState(qs[i], a.paramState(ps[i])!);
  kiln.noGrad(() => qs.forEach((q, i) => q.copy_(ps[i])));
  t.equal(b.paramState(qs[1])!.expAvg instanceof kiln.Tensor, true);
  t.not(b.paramState(qs[1])!.expAvg, a.paramState(ps[1])!.expAvg, 'copied, not shared');
  run(a, ps, 2, 4);
  run(b, qs, 2, 4);
  t.same(qs.map(vals), ps.map(vals), 'set state resumes identically (into flat buffers)');
  t.throws(() => a.paramState(kiln.zeros([2])), kiln.ValueError, 'not a parameter of the optimizer');
  t.throws(() => b.setParamState(qs[0], { step: 1, expAvg: kiln.zeros([5]) }), /has no 'expAvgSq'/);
  t.throws(() => b.setParamState(qs[0], { step: 1, expAvg: kiln.zeros([4]), expAvgSq: kiln.zeros([4]) }), kiln.ShapeError);
  t.equal(b.paramState(qs[0])!.step, 4, 'unchanged after a failed set');
  b.setParamState(qs[0], {});
  t.same(b.paramState(qs[0]), {}, '{} clears the state');
});

t.test('flat state errors and memory', async (t) => {
  const mixed = new optim.SGD([kiln.zeros([2], { requiresGrad: true }), kiln.zeros([2], { dtype: 'float64', requiresGrad: true })], { momentum: 0.9 });
  t.throws(() => mixed.useFlatState(0), /float32 and float64/);
  t.throws(() => mixed.useFlatState(1), kiln.ValueError, 'group index out of range');
  t.throws(() => mixed.flatState(-1), kiln.ValueError);
  const halves = new optim.SGD([kiln.zeros([2], { requiresGrad: true }), kiln.zeros([3], { dtype: 'bfloat16', requiresGrad: true })], { momentum: 0.9 });
  halves.useFlatState(0);
  t.pass('float32 and bfloat16 parameters share float32 state');
  const before = kiln.memory().tensors;
  const ps = params(4);
  const opt = new optim.Adam(ps);
  opt.useFlatState();
  run(opt, ps, 0, 2);
  opt.dispose();
  for (const p of ps) p.dispose();
  t.equal(kiln.memory().tensors, before, 'dispose frees the buffers and their views');
});

t.test('a non-contiguous parameter keeps its state in the flat buffers too', async (t) => {
  const p = kiln.randn([3, 4]).transpose(0, 1);
  p.requiresGrad = true;
  const q = kiln.randn([5]).requiresGrad_();
  const opt = new optim.Adam([p, q], { lr: 0.1 });
  opt.useFlatState();
  p.mul(2).sum().add(q.sum()).backward();
  opt.step();
  const flat = opt.flatState(0);
  const st = opt.paramState(p)!;
  t.ok(st.expAvg._sharesStorage(flat.buffers.expAvg), "p's first moment is a view of the flat buffer");
  const range = flat.ranges.find((r) => r.param === p)!;
  const inBuffer = Array.from(flat.buffers.expAvg.dataSync()).slice(range.start, range.start + 12);
  t.ok(inBuffer.every((v) => Math.abs(Number(v) - 0.2) < 1e-6), 'the buffer holds the update (0.1 * grad 2)');
});
