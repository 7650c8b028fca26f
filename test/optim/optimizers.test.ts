// Optimizers: SGD (plain, momentum, dampening, Nesterov, weight decay, maximize), Adam (L2, AMSGrad)
// and AdamW against plain float64 references over 3 steps; param groups, zeroGrad, strided
// parameters, stateDict round trips that resume identically, memory, and the errors.
import t, { Test } from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import * as optim from '../../lib/optim/index';
import { adamStep, sgdStep } from '../../lib/ops/optim';
import { rng } from '../helpers/gradcheck';

const vals = (x: Tensor): number[] => Array.from(x.dataSync() as Float64Array);
const randVals = (n: number, seed: number): number[] => {
  const r = rng(seed);
  return Array.from({ length: n }, () => 2 * r() - 1);
};
const param = (v: number[], dtype: kiln.DType = 'float64', shape = [v.length]): Tensor =>
  kiln.tensor(Float64Array.from(v), { shape, dtype, requiresGrad: true });
const setGrad = (p: Tensor, g: number[]): void => {
  p.grad?.dispose();
  p.grad = kiln.tensor(Float64Array.from(g), { shape: [...p.shape], dtype: p.dtype });
};

function close(t: Test, got: number[], want: number[], rtol: number, msg: string): void {
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i])));
  t.ok(got.length === want.length && worst <= rtol, `${msg} (max error ${worst.toExponential(2)})`);
}

// ---- plain float64 references (PyTorch's update rules) ----

interface SgdRef { lr: number; momentum?: number; dampening?: number; weightDecay?: number; nesterov?: boolean; maximize?: boolean }
function sgdRef(p0: number[], grads: number[][], o: SgdRef): number[][] {
  const p = [...p0];
  let buf: number[] | null = null;
  const out: number[][] = [];
  const mom = o.momentum ?? 0, damp = o.dampening ?? 0, wd = o.weightDecay ?? 0;
  for (const g0 of grads) {
    const g = g0.map((x, i) => (o.maximize ? -x : x) + wd * p[i]);
    let d = g;
    if (mom !== 0) {
      buf = buf === null ? [...g] : buf.map((b, i) => mom * b + (1 - damp) * g[i]);
      d = o.nesterov ? g.map((x, i) => x + mom * buf![i]) : buf;
    }
    for (let i = 0; i < p.length; i++) p[i] -= o.lr * d[i];
    out.push([...p]);
  }
  return out;
}

interface AdamRef { lr: number; betas?: [number, number]; eps?: number; weightDecay?: number; amsgrad?: boolean; decoupled?: boolean; maximize?: boolean }
function adamRef(p0: number[], grads: number[][], o: AdamRef): number[][] {
  const [b1, b2] = o.betas ?? [0.9, 0.999];
  const eps = o.eps ?? 1e-8, wd = o.weightDecay ?? 0;
  const p = [...p0], m = p.map(() => 0), v = p.map(() => 0), vmax = p.map(() => 0);
  const out: number[][] = [];
  grads.forEach((g0, s) => {
    const step = s + 1;
    for (let i = 0; i < p.length; i++) {
      let g = o.maximize ? -g0[i] : g0[i];
      if (o.decoupled) p[i] *= 1 - o.lr * wd;
      else g += wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      vmax[i] = Math.max(vmax[i], v[i]);
      const denom = Math.sqrt(o.amsgrad ? vmax[i] : v[i]) / Math.sqrt(1 - b2 ** step) + eps;
      p[i] -= (o.lr / (1 - b1 ** step)) * (m[i] / denom);
    }
    out.push([...p]);
  });
  return out;
}

/** Runs 3 steps of opt on a fresh parameter with the given gradients; returns the parameter after each. */
function run3(make: (p: Tensor) => optim.Optimizer<any>, p0: number[], grads: number[][], dtype: kiln.DType): number[][] {
  const p = param(p0, dtype);
  const opt = make(p);
  return grads.map((g) => {
    setGrad(p, g);
    opt.step();
    return vals(p.to('float64'));
  });
}

const N = 37;
const P0 = randVals(N, 1);
const GRADS = [randVals(N, 2), randVals(N, 3), randVals(N, 4)];

const sgdCases: Array<[string, SgdRef]> = [
  ['plain', { lr: 0.1 }],
  ['momentum', { lr: 0.1, momentum: 0.9 }],
  ['momentum + dampening', { lr: 0.05, momentum: 0.8, dampening: 0.3 }],
  ['Nesterov', { lr: 0.1, momentum: 0.9, nesterov: true }],
  ['weight decay', { lr: 0.1, weightDecay: 0.01 }],
  ['momentum + weight decay + Nesterov', { lr: 0.1, momentum: 0.5, weightDecay: 0.1, nesterov: true }],
  ['maximize', { lr: 0.1, momentum: 0.9, weightDecay: 0.01, maximize: true }],
];

t.test('SGD matches the reference for 3 steps', async (t) => {
  for (const [name, o] of sgdCases) {
    const want = sgdRef(P0, GRADS, o);
    close(t, run3((p) => new optim.SGD([p], o), P0, GRADS, 'float64').flat(), want.flat(), 1e-14, `${name} float64`);
    close(t, run3((p) => new optim.SGD([p], o), P0, GRADS, 'float32').flat(), want.flat(), 2e-6, `${name} float32`);
  }
});

const adamCases: Array<[string, AdamRef]> = [
  ['defaults', { lr: 1e-3 }],
  ['betas, eps', { lr: 0.01, betas: [0.8, 0.99], eps: 1e-6 }],
  ['L2 weight decay', { lr: 0.01, weightDecay: 0.1 }],
  ['AMSGrad', { lr: 0.01, amsgrad: true, weightDecay: 0.05 }],
  ['maximize', { lr: 0.01, maximize: true }],
];

t.test('Adam matches the reference for 3 steps', async (t) => {
  for (const [name, o] of adamCases) {
    const want = adamRef(P0, GRADS, o);
    close(t, run3((p) => new optim.Adam([p], o), P0, GRADS, 'float64').flat(), want.flat(), 1e-14, `${name} float64`);
    close(t, run3((p) => new optim.Adam([p], o), P0, GRADS, 'float32').flat(), want.flat(), 2e-6, `${name} float32`);
  }
});

t.test('AdamW decouples weight decay', async (t) => {
  const o = { lr: 0.01, weightDecay: 0.1 };
  const want = adamRef(P0, GRADS, { ...o, decoupled: true });
  close(t, run3((p) => new optim.AdamW([p], o), P0, GRADS, 'float64').flat(), want.flat(), 1e-14, 'float64');
  close(t, run3((p) => new optim.AdamW([p], o), P0, GRADS, 'float32').flat(), want.flat(), 2e-6, 'float32');
  const amsWant = adamRef(P0, GRADS, { ...o, decoupled: true, amsgrad: true });
  close(t, run3((p) => new optim.AdamW([p], { ...o, amsgrad: true }), P0, GRADS, 'float64').flat(), amsWant.flat(), 1e-14, 'AMSGrad');
  const defaults = run3((p) => new optim.AdamW([p], { lr: 0.01 }), P0, GRADS, 'float64');
  close(t, defaults.flat(), adamRef(P0, GRADS, { lr: 0.01, weightDecay: 0.01, decoupled: true }).flat(), 1e-14, 'default weightDecay 0.01');
  t.notSame(want, adamRef(P0, GRADS, o), 'decoupled decay differs from L2');
});

t.test('large parameters (parallel chunks) match the reference', async (t) => {
  const n = 100_003;
  const p0 = randVals(n, 5), grads = [randVals(n, 6), randVals(n, 7), randVals(n, 8)];
  close(t, run3((p) => new optim.AdamW([p], { lr: 0.01 }), p0, grads, 'float64')[2], adamRef(p0, grads, { lr: 0.01, weightDecay: 0.01, decoupled: true })[2], 1e-14, 'AdamW');
  close(t, run3((p) => new optim.SGD([p], { lr: 0.1, momentum: 0.9 }), p0, grads, 'float32')[2], sgdRef(p0, grads, { lr: 0.1, momentum: 0.9 })[2], 2e-6, 'SGD');
});

t.test('param groups: per-group options, defaults, addParamGroup; params without grad are skipped', async (t) => {
  const a = param([1, 2]), b = param([3, 4]), c = param([5]), d = param([6]);
  const opt = new optim.SGD([{ params: [a] }, { params: [b], lr: 1 }], { lr: 0.1, momentum: 0.5 });
  t.equal(opt.paramGroups[0].lr, 0.1);
  t.equal(opt.paramGroups[1].lr, 1);
  t.equal(opt.paramGroups[1].momentum, 0.5, 'missing options take the defaults');
  opt.addParamGroup({ params: [c], momentum: 0 });
  opt.addParamGroup({ params: [d] });
  for (const p of [a, b, c]) setGrad(p, p.shape[0] === 2 ? [1, 1] : [1]);
  opt.step();
  t.same(vals(a), [0.9, 1.9]);
  t.same(vals(b), [2, 3]);
  t.same(vals(c), [4.9]);
  t.same(vals(d), [6], 'no gradient, no update');
  t.notOk(opt.state.has(d), 'no state for a parameter never stepped');
  t.notOk(opt.state.get(c)?.momentumBuffer, 'no momentum buffer without momentum');
  t.throws(() => opt.addParamGroup({ params: [a] }), kiln.ValueError, 'a parameter in two groups');
});

t.test('zeroGrad disposes the grads (setToNone) or zeroes them', async (t) => {
  const p = param([1, 2, 3]);
  const opt = new optim.Adam([p]);
  setGrad(p, [1, 2, 3]);
  const g = p.grad!;
  opt.zeroGrad();
  t.equal(p.grad, null);
  t.ok(g.isDisposed);
  setGrad(p, [1, 2, 3]);
  opt.zeroGrad(false);
  t.same(vals(p.grad!), [0, 0, 0]);
});

t.test('gradients from backward drive the update; the closure form returns the loss', async (t) => {
  const p = param([1, -2]);
  const opt = new optim.SGD([p], { lr: 0.5 });
  const loss = opt.step(() => {
    opt.zeroGrad();
    // loss = sum(p * p) through the tensor API; d/dp = 2p.
    const l = kiln.tidy(() => p.mul(p).sum());
    l.backward();
    return l.item();
  });
  t.equal(loss, 5);
  t.same(vals(p), [0, 0]);
});

t.test('strided parameters and gradients are updated through contiguous copies', async (t) => {
  const base = kiln.tensor(Float64Array.from([1, 2, 3, 4, 5, 6]), { shape: [2, 3], dtype: 'float64' });
  const view = base.t(); // [3, 2], not contiguous, a leaf (base does not require grad)
  const opt = new optim.SGD([view], { lr: 1 });
  const g = kiln.tensor(Float64Array.from([10, 20, 30, 40, 50, 60]), { shape: [2, 3], dtype: 'float64' });
  view.grad = g.t();
  opt.step();
  t.same(base.toArray(), [[-9, -18, -27], [-36, -45, -54]], 'the update lands in the viewed storage');
  const p = param([1, 2, 3, 4, 5, 6], 'float64', [3, 2]);
  const adam = new optim.Adam([p], { lr: 0.1 });
  p.grad = g.t();
  adam.step();
  const want = adamRef([1, 2, 3, 4, 5, 6], [[10, 40, 20, 50, 30, 60]], { lr: 0.1 })[0];
  close(t, vals(p), want, 1e-14, 'Adam with a transposed gradient');
});

t.test('stateDict round trip resumes identically', async (t) => {
  const makers: Array<[string, (ps: Tensor[]) => optim.Optimizer<any>]> = [
    ['SGD', (ps) => new optim.SGD([{ params: [ps[0]] }, { params: [ps[1]], lr: 0.05 }], { lr: 0.1, momentum: 0.9, nesterov: true })],
    ['Adam', (ps) => new optim.Adam([{ params: [ps[0]] }, { params: [ps[1]], betas: [0.5, 0.9] }], { lr: 0.01, amsgrad: true })],
    ['AdamW', (ps) => new optim.AdamW(ps, { lr: 0.01 })],
  ];
  const grads = [0, 1, 2, 3, 4].map((s) => [randVals(5, 10 + s), randVals(3, 20 + s)]);
  for (const [name, make] of makers) {
    const ps = [param(randVals(5, 30)), param(randVals(3, 31))];
    const opt = make(ps);
    const stepWith = (o: optim.Optimizer<any>, qs: Tensor[], s: number) => {
      qs.forEach((q, i) => setGrad(q, grads[s][i]));
      o.step();
    };
    stepWith(opt, ps, 0);
    stepWith(opt, ps, 1);
    // Resume: new parameters holding the same values, a fresh optimizer built with other options.
    const sd = opt.stateDict();
    const qs = ps.map((p) => param(vals(p)));
    const resumed = make(qs);
    resumed.paramGroups[0].lr = 123;
    resumed.loadStateDict(sd);
    t.equal(resumed.paramGroups[0].lr, opt.paramGroups[0].lr, `${name}: group options restored`);
    const json = JSON.parse(JSON.stringify(sd.paramGroups));
    t.same(json.map((g: { params: number[] }) => g.params), name === 'AdamW' ? [[0, 1]] : [[0], [1]], `${name}: params by index`);
    for (const s of [2, 3, 4]) {
      stepWith(opt, ps, s);
      stepWith(resumed, qs, s);
    }
    t.same(vals(qs[0]), vals(ps[0]), `${name}: same parameters after 3 more steps`);
    t.same(vals(qs[1]), vals(ps[1]), `${name}: second group too`);
    const sd2 = resumed.stateDict();
    t.equal(Object.keys(sd2.state).length, 2);
    if (name !== 'SGD') t.equal(sd2.state[0].step, 5, `${name}: step count carried over`);
    opt.dispose();
    resumed.dispose();
  }
});

t.test('loadStateDict copies and converts, and rejects a state that does not fit', async (t) => {
  const p = param([1, 2, 3]);
  const opt = new optim.Adam([p]);
  setGrad(p, [1, 1, 1]);
  opt.step();
  const sd = opt.stateDict();
  const q = param([1, 2, 3], 'float32');
  const other = new optim.Adam([q]);
  other.loadStateDict(sd);
  const m = other.state.get(q)!.expAvg as Tensor;
  t.equal(m.dtype, 'float32', 'state converted to the parameter dtype');
  opt.dispose();
  t.ok((sd.state[0].expAvg as Tensor).isDisposed, 'the source was the optimizer\'s own state');
  close(t, vals(m.to('float64')), [0.1, 0.1, 0.1], 1e-7, 'the copy survives the source');

  const two = new optim.Adam([{ params: [param([1])] }, { params: [param([2])] }]);
  t.throws(() => two.loadStateDict(sd), kiln.ValueError, 'group count');
  const wide = new optim.Adam([param([1, 2, 3]), param([4])]);
  t.throws(() => wide.loadStateDict(sd), kiln.ValueError, 'group size');
  const shaped = new optim.Adam([param([1, 2])]);
  t.throws(() => shaped.loadStateDict(other.stateDict()), kiln.ShapeError, 'state shape');
  t.equal(shaped.state.size, 0, 'a rejected state leaves the optimizer as it was');
  t.throws(() => shaped.loadStateDict({ state: { 0: { expAvg: 'x' as unknown as Tensor } }, paramGroups: [{ params: [0] }] }), kiln.ValueError);
});

t.test('loadStateDict checks options and every state entry, names the entry, and changes nothing on error', async (t) => {
  const p = param([1, 2, 3]);
  const adam = new optim.Adam([p], { lr: 0.01, amsgrad: true });
  setGrad(p, [1, -1, 2]);
  adam.step();
  const good = adam.stateDict();
  // Each case edits a shallow copy: the tensors stay the optimizer's own.
  const edited = (edit: (sd: any) => void): optim.OptimizerStateDict => {
    const sd = { state: { 0: { ...good.state[0] } } as any, paramGroups: good.paramGroups.map((g) => ({ ...g, params: [...g.params] })) as any };
    edit(sd);
    return sd;
  };
  const q = param([0, 0, 0]);
  const target = new optim.Adam([q], { lr: 0.5, amsgrad: true });
  setGrad(q, [1, 1, 1]);
  target.step();
  const before = target.state.get(q)!;
  const intMoment = kiln.tensor([1, 2, 3], { dtype: 'int32' }), column = kiln.zeros([3, 1], { dtype: 'float64' });
  const dead = kiln.zeros([3], { dtype: 'float64' });
  dead.dispose();
  const live = kiln.memory().tensors;
  const rejects = (what: string, edit: (sd: any) => void, name: string, message: RegExp) => {
    t.throws(() => target.loadStateDict(edited(edit)), { name, message }, what);
    t.equal(target.state.get(q), before, `${what}: the state is the old one`);
    t.equal(target.paramGroups[0].lr, 0.5, `${what}: the options are the old ones`);
    t.equal(kiln.memory().tensors, live, `${what}: no copy left behind`);
  };
  rejects('negative lr', (sd) => (sd.paramGroups[0].lr = -1), 'ValueError', /group 0 of the state: .*lr must be a finite number >= 0, got -1/);
  rejects('lr as a string', (sd) => (sd.paramGroups[0].lr = '0.1'), 'ValueError', /lr must be a finite number/);
  rejects('NaN eps', (sd) => (sd.paramGroups[0].eps = NaN), 'ValueError', /eps must be a finite number/);
  rejects('infinite weightDecay', (sd) => (sd.paramGroups[0].weightDecay = Infinity), 'ValueError', /weightDecay must be a finite number/);
  rejects('beta of 1.5', (sd) => (sd.paramGroups[0].betas = [0.9, 1.5]), 'ValueError', /betas must be two numbers/);
  rejects('betas not a pair', (sd) => (sd.paramGroups[0].betas = 0.9), 'ValueError', /betas must be two numbers/);
  rejects('amsgrad not a boolean', (sd) => (sd.paramGroups[0].amsgrad = 'true'), 'ValueError', /amsgrad must be a boolean/);
  rejects('maximize not a boolean', (sd) => (sd.paramGroups[0].maximize = 1), 'ValueError', /maximize must be a boolean/);
  rejects('negative initialLr', (sd) => (sd.paramGroups[0].initialLr = -0.1), 'ValueError', /initialLr must be a finite number/);
  rejects('a parameter index that is not one', (sd) => (sd.paramGroups[0].params = [-1]), 'ValueError', /lists parameter -1, not an index/);
  rejects('no step', (sd) => delete sd.state[0].step, 'ValueError', /state of parameter 0 has no 'step' \(Adam keeps step, expAvg, expAvgSq, maxExpAvgSq/);
  rejects('no first moment', (sd) => delete sd.state[0].expAvg, 'ValueError', /parameter 0 has no 'expAvg'/);
  rejects('no running maximum under amsgrad', (sd) => delete sd.state[0].maxExpAvgSq, 'ValueError', /parameter 0 has no 'maxExpAvgSq'/);
  rejects('a running maximum without amsgrad', (sd) => (sd.paramGroups[0].amsgrad = false), 'ValueError', /has 'maxExpAvgSq', which Adam does not keep/);
  rejects('another optimizer\'s entry', (sd) => (sd.state[0].momentumBuffer = sd.state[0].expAvg), 'ValueError', /has 'momentumBuffer', which Adam does not keep/);
  rejects('negative step', (sd) => (sd.state[0].step = -1), 'ValueError', /state 'step' of parameter 0 must be a step count \(an integer >= 0\), got -1/);
  rejects('fractional step', (sd) => (sd.state[0].step = 1.5), 'ValueError', /must be a step count/);
  rejects('NaN step', (sd) => (sd.state[0].step = NaN), 'ValueError', /must be a step count/);
  rejects('step as a tensor', (sd) => (sd.state[0].step = sd.state[0].expAvg), 'ValueError', /must be a step count .*got a tensor/);
  rejects('moment as a number', (sd) => (sd.state[0].expAvg = 0), 'ValueError', /state 'expAvg' of parameter 0 must be a tensor, got 0/);
  rejects('integer moment', (sd) => (sd.state[0].expAvgSq = intMoment), 'DTypeError', /'expAvgSq' of parameter 0 is int32/);
  rejects('moment of another shape', (sd) => (sd.state[0].expAvg = column), 'ShapeError', /'expAvg' of parameter 0 has shape \[3, ?1\]/);
  rejects('disposed moment', (sd) => (sd.state[0].expAvg = dead), 'DisposedError', /./);
  rejects('state not an object', (sd) => (sd.state[0] = 5), 'ValueError', /state of parameter 0 is not an object/);
  rejects('state of a parameter no group lists', (sd) => (sd.state[1] = {}), 'ValueError', /parameter "1", which no group lists/);
  rejects('an index written "00"', (sd) => (sd.state = { '00': sd.state[0] }), 'ValueError', /parameter "00", which no group lists/);

  target.loadStateDict(good);
  t.equal(target.paramGroups[0].lr, 0.01, 'the good state loads');
  t.same(vals(target.state.get(q)!.maxExpAvgSq as Tensor), vals(good.state[0].maxExpAvgSq as Tensor));
  target.loadStateDict({ state: { 0: {} }, paramGroups: good.paramGroups });
  t.same(target.state.get(q), {}, 'an empty state (a parameter that never stepped) loads');

  const two = new optim.Adam([{ params: [param([1])] }, { params: [param([2])] }]);
  t.throws(() => two.loadStateDict({ state: {}, paramGroups: [{ params: [0] }, { params: [0] }] }), /parameter 0 is listed twice/);

  const r = param([1, 2]);
  const sgd = new optim.SGD([r], { lr: 0.1, momentum: 0.9 });
  setGrad(r, [1, 1]);
  sgd.step();
  const sgdSd = sgd.stateDict();
  const other = new optim.SGD([param([0, 0])], { lr: 0.1, momentum: 0.9 });
  t.throws(() => other.loadStateDict({ ...sgdSd, state: { 0: { ...sgdSd.state[0], step: 3 } } }), /has 'step', which SGD does not keep \(SGD keeps momentumBuffer/);
  t.throws(() => other.loadStateDict({ ...sgdSd, paramGroups: [{ ...sgdSd.paramGroups[0], momentum: -0.9 }] }), /group 0 of the state: SGD: momentum must be/);
  t.throws(() => other.loadStateDict({ ...sgdSd, paramGroups: [{ ...sgdSd.paramGroups[0], nesterov: true, dampening: 0.5 }] }), /Nesterov momentum needs/);
  t.throws(() => other.loadStateDict({ ...sgdSd, paramGroups: [{ ...sgdSd.paramGroups[0], nesterov: 'yes' }] }), /nesterov must be a boolean/);
  other.loadStateDict(sgdSd);
  t.same(vals(other.state.get(other.paramGroups[0].params[0])!.momentumBuffer as Tensor), [1, 1], 'the momentum buffer loads');

  // An optimizer that does not describe its state gets the generic checks: finite numbers, fitting tensors.
  class Plain extends optim.Optimizer<{ lr: number }> {
    protected checkOptions(): void {}
    protected update(_p: Tensor, _g: Tensor, _group: unknown, s: Record<string, unknown>): void {
      s.count = 1;
    }
  }
  const plain = new Plain([param([1])], { lr: 1 });
  plain.loadStateDict({ state: { 0: { count: 7 } }, paramGroups: [{ params: [0], lr: 1 }] });
  t.same(plain.state.get(plain.paramGroups[0].params[0]), { count: 7 });
  t.throws(() => plain.loadStateDict({ state: { 0: { count: Infinity } }, paramGroups: [{ params: [0], lr: 1 }] }), /'count' of parameter 0 must be a tensor or a finite number, got Infinity/);
  adam.dispose();
  target.dispose();
  sgd.dispose();
  other.dispose();
});

t.test('optimizer state survives tidy scopes and memory stays flat', async (t) => {
  const p = param(randVals(1000, 40), 'float32');
  const opt = new optim.AdamW([p], { lr: 1e-3 });
  kiln.tidy(() => {
    setGrad(p, randVals(1000, 41));
    opt.step();
  });
  t.notOk((opt.state.get(p)!.expAvg as Tensor).isDisposed, 'state created inside tidy is kept');
  const before = kiln.memory();
  for (let i = 0; i < 50; i++) {
    kiln.tidy(() => {
      setGrad(p, randVals(1000, 42 + i));
      opt.step();
      opt.zeroGrad();
    });
  }
  t.equal(kiln.memory().tensors, before.tensors, 'no tensors leak per step');
  t.equal(kiln.memory().bytes, before.bytes, 'no bytes leak per step');
  opt.dispose();
});

t.test('bad options, bad parameters and bad gradients are errors', async (t) => {
  const p = param([1, 2]);
  t.throws(() => new optim.SGD([p], { lr: -1 }), kiln.ValueError);
  t.throws(() => new optim.SGD([p], { nesterov: true }), kiln.ValueError, 'Nesterov without momentum');
  t.throws(() => new optim.SGD([p], { nesterov: true, momentum: 0.9, dampening: 0.1 }), kiln.ValueError);
  t.throws(() => new optim.Adam([p], { betas: [0.9, 1] }), kiln.ValueError);
  t.throws(() => new optim.Adam([p], { eps: NaN }), kiln.ValueError);
  t.throws(() => new optim.Adam([p], { amsgrad: 1 as unknown as boolean }), kiln.ValueError);
  t.throws(() => new optim.Adam([]), kiln.ValueError, 'empty parameter list');
  t.throws(() => new optim.Adam([p, p]), kiln.ValueError, 'duplicate');
  t.throws(() => new optim.Adam([kiln.tensor([1, 2])]), kiln.DTypeError, 'integer parameter');
  t.throws(() => new optim.Adam([p.view(2, 1)]), kiln.ValueError, 'non-leaf');
  t.throws(() => new optim.Adam([p, { params: [param([1])] }] as never), kiln.ValueError, 'a mix of tensors and groups');

  const opt = new optim.Adam([p]);
  p.grad = kiln.tensor(Float64Array.from([1, 2, 3]), { dtype: 'float64' });
  t.throws(() => opt.step(), kiln.ShapeError, 'gradient shape');
  p.grad = kiln.tensor([1, 2], { dtype: 'float32' });
  t.throws(() => opt.step(), kiln.DTypeError, 'gradient dtype');
  t.equal(opt.state.get(p)!.step, 0, 'a failed step does not count');
  const h = param([1, 2], 'bfloat16');
  h.grad = kiln.tensor([1, 2], { dtype: 'float32' });
  t.throws(() => new optim.SGD([h], { lr: 0.1 }).step(), /grad is float32 but must be bfloat16/, 'a bfloat16 parameter takes a bfloat16 gradient');
});

t.test('the native kernels check their operands', async (t) => {
  const f = (v: number[], dtype: kiln.DType = 'float32') => kiln.tensor(Float64Array.from(v), { dtype });
  const p = f([1, 2, 3, 4]), g = f([1, 1, 1, 1]), m = f([0, 0, 0, 0]), v = f([0, 0, 0, 0]);
  const o = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, biasCorrection1: 0.1, biasCorrection2Sqrt: 0.03, decoupled: false, maximize: false };
  t.throws(() => adamStep(p, g, m, f([0, 0, 0]), null, o), kiln.ShapeError);
  t.throws(() => adamStep(p, g, m, f([0, 0, 0, 0], 'float64'), null, o), kiln.DTypeError);
  t.throws(() => adamStep(p, g, m, m, null, o), /overlap/);
  t.throws(() => adamStep(p, p, m, v, null, o), /overlaps the parameter/);
  const strided = f([0, 0, 0, 0, 0, 0, 0, 0]).reshape(4, 2).select(1, 0);
  t.throws(() => adamStep(p, g, strided, v, null, o), /not contiguous/);
  t.throws(() => adamStep(p, g, m, v, null, { ...o, biasCorrection1: 0 }), kiln.ValueError);
  t.throws(() => adamStep(p, g, m, v, null, { ...o, eps: undefined } as never), /eps/);
  const so = { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false, maximize: false, firstStep: true };
  t.throws(() => sgdStep(p, g, null, so), /momentum buffer/);
  t.throws(() => sgdStep(f([1, 2, 3, 4], 'int32' as kiln.DType), g, null, { ...so, momentum: 0 }), kiln.DTypeError);
  const half = f([1, 2, 3, 4], 'bfloat16');
  t.throws(() => sgdStep(half, f([1, 1, 1, 1], 'bfloat16'), f([0, 0, 0, 0], 'bfloat16'), so), /momentumBuffer is bfloat16 but must be float32/, 'half parameters keep float32 state');
  t.same(vals(p.to('float64')), [1, 2, 3, 4], 'nothing was written');
});
