// The multi-tensor ("foreach") and capturable optimizer paths on the CPU: foreach steps bit for bit
// like one call per parameter (SGD with momentum, Nesterov and weight decay, Adam, AdamW, AMSGrad,
// maximize, float32 and float64 parameters in one group, bfloat16 parameters with float32 state,
// strided, empty and multi-block parameters, parameters that skip steps); capturable steps (lr and
// step counts in tensors the kernels read) match the host path within float32 rounding under an LR
// schedule; stateDict keeps step counts as numbers and loads them onto the device; and the
// multi-tensor kernels' errors name the op and the parameter.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import * as optim from '../../lib/optim/index';
import { adamStepMulti, sgdStepMulti } from '../../lib/ops/optim';
import { rng } from '../helpers/gradcheck';

const vals = (x: Tensor): number[] => Array.from(x.to('float64').dataSync() as Float64Array);

type Maker = (ps: Tensor[] | optim.ParamGroupInput<any>[], extra: Record<string, unknown>) => optim.Optimizer<any>;

const CONFIGS: Array<[string, Maker]> = [
  ['SGD', (ps, x) => new optim.SGD(ps as Tensor[], { lr: 0.1, ...x })],
  ['SGD (momentum, dampening, weight decay)', (ps, x) => new optim.SGD(ps as Tensor[], { lr: 0.1, momentum: 0.9, dampening: 0.2, weightDecay: 0.01, ...x })],
  ['SGD (Nesterov, maximize)', (ps, x) => new optim.SGD(ps as Tensor[], { lr: 0.05, momentum: 0.8, nesterov: true, maximize: true, ...x })],
  ['Adam', (ps, x) => new optim.Adam(ps as Tensor[], { lr: 0.01, ...x })],
  ['Adam (L2 weight decay, AMSGrad)', (ps, x) => new optim.Adam(ps as Tensor[], { lr: 0.01, weightDecay: 0.1, amsgrad: true, ...x })],
  ['AdamW', (ps, x) => new optim.AdamW(ps as Tensor[], { lr: 0.01, ...x })],
  ['AdamW (AMSGrad, maximize)', (ps, x) => new optim.AdamW(ps as Tensor[], { lr: 0.02, weightDecay: 0.05, amsgrad: true, maximize: true, betas: [0.8, 0.99], ...x })],
];

// Shapes: 70001 elements span several of the CPU kernels' 32Ki-element blocks; [0] is empty.
const SPECS: Array<{ shape: number[]; dtype: kiln.DType }> = [
  { shape: [70001], dtype: 'float32' },
  { shape: [7, 3], dtype: 'float64' },
  { shape: [5], dtype: 'float32' },
  { shape: [0], dtype: 'float32' },
  { shape: [33], dtype: 'bfloat16' },
  { shape: [], dtype: 'float64' },
  { shape: [4, 6], dtype: 'float32' }, // stepped through a transposed (strided) view below
];

/** The same parameters (fresh tensors) for every run; the last one is a strided view of a leaf. */
function params(seed: number): Tensor[] {
  const r = rng(seed);
  return SPECS.map(({ shape, dtype }, i) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const x = kiln.tensor(Float64Array.from({ length: n }, () => 2 * r() - 1), { shape, dtype });
    return (i === SPECS.length - 1 ? x.t().contiguous().t() : x).requiresGrad_();
  });
}

/** Gradients of step s; parameter 2 skips odd steps (its step count falls behind, its buffer starts late). */
function setGrads(ps: Tensor[], s: number): void {
  const r = rng(1000 + s);
  ps.forEach((p, i) => {
    p.grad?.dispose();
    p.grad = i === 2 && s % 2 === 1 ? null : kiln.tensor(Float64Array.from({ length: p.numel }, () => 2 * r() - 1), { shape: [...p.shape], dtype: p.dtype });
  });
}

function stateVals(opt: optim.Optimizer<any>, ps: Tensor[]): unknown[] {
  return ps.map((p) => Object.fromEntries(Object.entries(opt.paramState(p) ?? {}).map(([k, v]) => [k, v instanceof kiln.Tensor ? vals(v) : v])));
}

t.test('foreach steps bit for bit like one call per parameter', async (t) => {
  for (const [name, make] of CONFIGS) {
    const a = params(1), b = params(1);
    const per = make(a, { foreach: false }), multi = make(b, {});
    t.equal(multi.paramGroups[0].foreach, true, `${name}: foreach is the default`);
    for (let s = 0; s < 5; s++) {
      setGrads(a, s);
      setGrads(b, s);
      per.step();
      multi.step();
    }
    t.same(a.map(vals), b.map(vals), `${name}: same parameter values`);
    t.same(stateVals(per, a), stateVals(multi, b), `${name}: same state`);
    t.ok(b[4].dtype === 'bfloat16' && (Object.values(multi.paramState(b[4])!).filter((v) => v instanceof kiln.Tensor) as Tensor[]).every((v) => v.dtype === 'float32'),
      `${name}: a bfloat16 parameter keeps float32 state`);
    per.dispose();
    multi.dispose();
  }
});

t.test('foreach with flat state and several groups steps like one call per parameter', async (t) => {
  const group = (ps: Tensor[]) => [{ params: [ps[0], ps[2]] }, { params: [ps[1], ps[5]], lr: 0.003 }, { params: [ps[3], ps[4], ps[6]] }];
  const a = params(2), b = params(2);
  const per = new optim.AdamW(group(a), { lr: 0.01, foreach: false });
  const multi = new optim.AdamW(group(b), { lr: 0.01 });
  multi.useFlatState(0);
  for (let s = 0; s < 3; s++) {
    setGrads(a, s);
    setGrads(b, s);
    per.step();
    multi.step();
  }
  t.same(a.map(vals), b.map(vals));
  t.same(stateVals(per, a), stateVals(multi, b));
});

t.test('capturable: lr and step counts on the device match the host path under an LR schedule', async (t) => {
  for (const [name, make] of CONFIGS) {
    const a = params(3), b = params(3);
    const host = make(a, {}), dev = make(b, { capturable: true });
    const sa = new optim.WarmupCosineLR(host, { warmupSteps: 5, totalSteps: 20 });
    const sb = new optim.WarmupCosineLR(dev, { warmupSteps: 5, totalSteps: 20 });
    for (let s = 0; s < 20; s++) {
      setGrads(a, s);
      setGrads(b, s);
      host.step();
      sa.step();
      // A replay loop's order: the (captured) step, the schedule, then syncLr outside the graph before
      // the next replay (step() calls it too).
      dev.step();
      sb.step();
      dev.syncLr();
    }
    let worst = 0;
    a.forEach((p, i) => {
      const x = vals(p), y = vals(b[i]);
      for (let k = 0; k < x.length; k++) worst = Math.max(worst, Math.abs(x[k] - y[k]) / Math.max(1, Math.abs(x[k])));
    });
    // The device path computes the bias corrections from its own count (C's pow, not JavaScript's **):
    // a float32 value may move by an ulp per step; float64 and bfloat16 parameters likewise.
    t.ok(worst <= 2e-6, `${name}: within float32 rounding after 20 steps (max relative difference ${worst.toExponential(2)})`);
    if (name.startsWith('Adam')) {
      const step = dev.paramState(b[0])!.step;
      t.ok(step instanceof kiln.Tensor && step.dtype === 'float64' && step.item() === 20, `${name}: the step count is a float64 tensor the kernel advanced to 20`);
      t.equal((dev.paramState(b[2])!.step as Tensor).item(), 10, `${name}: a parameter that skipped steps keeps its own count`);
    }
    host.dispose();
    dev.dispose();
  }
});

t.test('capturable with foreach false steps one parameter per call, the same way', async (t) => {
  const a = params(4), b = params(4);
  const one = new optim.Adam(a, { lr: 0.01, capturable: true, foreach: false });
  const many = new optim.Adam(b, { lr: 0.01, capturable: true });
  for (let s = 0; s < 4; s++) {
    setGrads(a, s);
    setGrads(b, s);
    one.step();
    many.step();
  }
  t.same(a.map(vals), b.map(vals));
  t.same(stateVals(one, a), stateVals(many, b));
});

t.test('capturable state: stateDict saves step counts as numbers, loadStateDict puts them on the device', async (t) => {
  for (const capturableFrom of [true, false]) {
    const a = params(5), b = params(5);
    const src = new optim.AdamW(a, { lr: 0.01, amsgrad: true, capturable: capturableFrom });
    const ref = new optim.AdamW(b, { lr: 0.01, amsgrad: true });
    for (let s = 0; s < 3; s++) {
      setGrads(a, s);
      setGrads(b, s);
      src.step();
      ref.step();
    }
    const sd = src.stateDict();
    t.equal(sd.state[0].step, 3, `from ${capturableFrom ? '' : 'non-'}capturable: a number in the saved state`);
    t.equal(sd.state[2].step, 2, 'each parameter\'s own count');
    const json = JSON.parse(JSON.stringify(sd.paramGroups));
    t.equal(json[0].capturable, capturableFrom, 'the group\'s options are saved as they are');
    const c = params(5);
    kiln.noGrad(() => c.forEach((p, i) => p.copy_(a[i])));
    const dst = new optim.AdamW(c, { lr: 0.01, amsgrad: true, capturable: !capturableFrom });
    dst.loadStateDict(sd);
    t.equal(dst.paramGroups[0].capturable, !capturableFrom, 'the loading optimizer keeps its own capturable');
    const step = dst.paramState(c[0])!.step;
    if (capturableFrom) t.equal(step, 3, 'loaded into a host optimizer: a number');
    else t.ok(step instanceof kiln.Tensor && step.item() === 3, 'loaded into a capturable optimizer: a device tensor');
    for (let s = 3; s < 6; s++) {
      setGrads(a, s);
      setGrads(c, s);
      src.step();
      dst.step();
    }
    let worst = 0;
    a.forEach((p, i) => {
      const y = vals(c[i]);
      vals(p).forEach((x, k) => (worst = Math.max(worst, Math.abs(x - y[k]))));
    });
    t.ok(worst <= 1e-6, `the resumed run continues the saved one (max difference ${worst.toExponential(2)})`);
    t.equal(dst.stateDict().state[0].step, 6, 'the count carried over');
    src.dispose();
    ref.dispose();
    dst.dispose();
  }
});

t.test('SGD capturable with momentum, and setting the lr between steps', async (t) => {
  const a = params(6), b = params(6);
  const host = new optim.SGD(a, { lr: 0.1, momentum: 0.9 });
  const dev = new optim.SGD(b, { lr: 0.1, momentum: 0.9, capturable: true });
  for (let s = 0; s < 4; s++) {
    for (const o of [host, dev]) o.paramGroups[0].lr = 0.1 / (s + 1);
    setGrads(a, s);
    setGrads(b, s);
    host.step();
    dev.step();
  }
  // lr 0.1 / 3 is not a float32 value: the device tensor is float64, so the runs agree exactly.
  t.same(a.map(vals), b.map(vals));
});

t.test('a capturable optimizer leaks no tensors per step', async (t) => {
  const p = kiln.randn([100]).requiresGrad_();
  const opt = new optim.AdamW([p], { capturable: true });
  p.grad = kiln.randn([100]);
  opt.step();
  const before = kiln.memory().tensors;
  for (let i = 0; i < 10; i++) kiln.tidy(() => opt.step());
  t.equal(kiln.memory().tensors, before);
  opt.dispose();
  p.grad.dispose();
});

t.test('capturable and foreach are checked like the other options', async (t) => {
  const p = kiln.zeros([2]).requiresGrad_();
  t.throws(() => new optim.Adam([p], { capturable: 1 as unknown as boolean }), /capturable must be a boolean/);
  t.throws(() => new optim.SGD([p], { foreach: 'yes' as unknown as boolean }), /foreach must be a boolean/);
});

t.test('the multi-tensor kernels check their lists and name the op and the parameter', async (t) => {
  const f = (v: number[], dtype: kiln.DType = 'float32') => kiln.tensor(Float64Array.from(v), { dtype });
  const z = (n: number, dtype: kiln.DType = 'float32') => kiln.zeros([n], { dtype });
  const p = [f([1, 2, 3]), f([4, 5])], g = [f([1, 1, 1]), f([1, 1])];
  const ao = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, biasCorrection1: 0.1, biasCorrection2Sqrt: 0.03, decoupled: false, maximize: false };
  const so = { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false, maximize: false, firstStep: true };
  const m = [z(3), z(2)], v = [z(3), z(2)];
  t.throws(() => adamStepMulti(p, [g[0]], m, v, [], null, ao), /adamStepMulti: grads has 1 tensors but there are 2 parameters/);
  t.throws(() => adamStepMulti(p, g, m, v, [z(3)], null, ao), /maxExpAvgSqs has 1 tensors but there are 2 parameters \(an absent state is an empty list\)/);
  t.throws(() => sgdStepMulti(p, g, [z(3)], null, so), /sgdStepMulti: momentumBuffers has 1 tensors/);
  t.throws(() => sgdStepMulti(p, g, [], null, so), /sgdStepMulti: a momentum buffer is needed exactly when momentum is not 0/);
  t.throws(() => adamStepMulti(p, [g[0], f([1, 1], 'float64')], m, v, [], null, ao), /adamStepMulti: parameter 1: grad is float64 but must be float32/);
  t.throws(() => adamStepMulti(p, g, [m[0], z(3)], v, [], null, ao), /adamStepMulti: parameter 1: expAvg has shape \[3\] but the parameter has shape \[2\]/);
  t.throws(() => adamStepMulti([p[0], f([4, 5], 'float64')], [g[0], f([1, 1], 'float64')], [m[0], z(2, 'float64')], [v[0], z(2, 'float64')], [], null, ao),
    /adamStepMulti: parameter 1 is float64 but parameter 0 is float32: one call updates parameters of one dtype/);
  t.throws(() => adamStepMulti(p, [g[0], m[1]], m, v, [], null, ao), /adamStepMulti: grads\[1\] and expAvgs\[1\] overlap in memory|parameter 1: grad and expAvg overlap/);
  t.throws(() => adamStepMulti(p, g, [m[0], v[0]], v, [], null, ao), kiln.ShapeError, 'a state of the wrong shape');
  const shared = z(5);
  t.throws(() => sgdStepMulti(p, g, [shared.narrow(0, 0, 3), shared.narrow(0, 2, 2)], null, so), /sgdStepMulti: momentumBuffers\[0\] and momentumBuffers\[1\] overlap in memory/);
  t.throws(() => adamStepMulti(p, g, m, v, [], { lr: f([0.1, 0.2], 'float64'), steps: [z(1, 'float64'), z(1, 'float64')] }, ao), /the learning rate tensor must have one element/);
  t.throws(() => adamStepMulti(p, g, m, v, [], { lr: kiln.scalar(0.1, { dtype: 'float64' }), steps: [kiln.scalar(0, { dtype: 'float64' })] }, ao), /steps has 1 tensors but there are 2 parameters/);
  t.throws(() => adamStepMulti(p, g, m, v, [], { lr: kiln.scalar(0.1, { dtype: 'float64' }), steps: [kiln.scalar(0, { dtype: 'float32' }), kiln.scalar(0, { dtype: 'float64' })] }, ao), /steps\[0\] must be a one-element float64 tensor, got float32/);
  t.throws(() => sgdStepMulti(p, g, [z(3), z(2)], kiln.scalar(1, { dtype: 'int32' }), so), /sgdStepMulti: the learning rate tensor must be float32 or float64, got int32/);
  t.same(p.map(vals), [[1, 2, 3], [4, 5]], 'nothing was written');
  t.same(m.map(vals), [[0, 0, 0], [0, 0]]);
  // Empty lists are a step of nothing (the lr tensor gives the device); without one no device is named.
  adamStepMulti([], [], [], [], [], { lr: kiln.scalar(0.1, { dtype: 'float64' }), steps: [] }, ao);
  sgdStepMulti([], [], [], kiln.scalar(0.1), so);
  t.throws(() => sgdStepMulti([], [], [], null, so), /sgdStepMulti: kernel has no tensor argument/);
});
