// LR schedulers against their closed forms (values written out or computed independently here),
// per-group base lrs, SequentialLR hand-over, stateDict resume, and bad arguments.
import t, { Test } from 'tap';
import * as kiln from '../../lib/index';
import * as optim from '../../lib/optim/index';

const makeOpt = (lr = 1, lr2?: number) => {
  const a = kiln.zeros([2], { requiresGrad: true });
  const b = kiln.zeros([2], { requiresGrad: true });
  return lr2 === undefined ? new optim.SGD([a, b], { lr }) : new optim.SGD([{ params: [a] }, { params: [b], lr: lr2 }], { lr });
};

/** The lr of group 0 seen by optimizer.step() at steps 0..n-1 (scheduler.step() after each). */
function lrs(s: optim.LRScheduler, n: number, group = 0): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(s.optimizer.paramGroups[group].lr);
    s.step();
  }
  return out;
}

function closeList(t: Test, got: number[], want: number[], msg: string): void {
  const worst = Math.max(0, ...want.map((w, i) => Math.abs(got[i] - w)));
  t.ok(got.length === want.length && worst < 1e-12, `${msg} (max error ${worst.toExponential(2)})`);
}

t.test('StepLR, MultiStepLR, ExponentialLR, LambdaLR', async (t) => {
  closeList(t, lrs(new optim.StepLR(makeOpt(1), { stepSize: 2, gamma: 0.5 }), 7), [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125], 'StepLR');
  closeList(t, lrs(new optim.MultiStepLR(makeOpt(1), { milestones: [1, 4], gamma: 0.1 }), 6), [1, 0.1, 0.1, 0.1, 0.01, 0.01], 'MultiStepLR');
  closeList(t, lrs(new optim.ExponentialLR(makeOpt(2), { gamma: 0.9 }), 4), [2, 1.8, 1.62, 1.458], 'ExponentialLR');
  const opt = makeOpt(1, 10);
  const lambda = new optim.LambdaLR(opt, { lrLambda: [(s) => 1 / (s + 1), (s) => s] });
  closeList(t, lrs(lambda, 4, 0), [1, 1 / 2, 1 / 3, 1 / 4], 'LambdaLR group 0');
  t.same(lambda.getLastLr(), [0.2, 40], 'one lambda per group, each on its own base lr');
});

t.test('LinearLR and LinearWarmupLR', async (t) => {
  closeList(t, lrs(new optim.LinearLR(makeOpt(0.3), { startFactor: 0.5, endFactor: 1, totalIters: 4 }), 6), [0.15, 0.1875, 0.225, 0.2625, 0.3, 0.3], 'LinearLR');
  closeList(t, lrs(new optim.LinearLR(makeOpt(1), { startFactor: 1, endFactor: 0.1, totalIters: 3 }), 5), [1, 0.7, 0.4, 0.1, 0.1], 'LinearLR decay');
  closeList(t, lrs(new optim.LinearWarmupLR(makeOpt(1), { warmupSteps: 4 }), 6), [0.25, 0.5, 0.75, 1, 1, 1], 'LinearWarmupLR');
  closeList(t, lrs(new optim.LinearWarmupLR(makeOpt(1), { warmupSteps: 0 }), 2), [1, 1], 'no warmup');
});

t.test('CosineAnnealingLR and WarmupCosineLR', async (t) => {
  const base = 0.5, etaMin = 0.05, tMax = 6;
  const cos = Array.from({ length: 9 }, (_, e) => etaMin + ((base - etaMin) * (1 + Math.cos((Math.PI * e) / tMax))) / 2);
  closeList(t, lrs(new optim.CosineAnnealingLR(makeOpt(base), { tMax, etaMin }), 9), cos, 'CosineAnnealingLR');
  t.ok(Math.abs(cos[3] - (base + etaMin) / 2) < 1e-15 && Math.abs(cos[6] - etaMin) < 1e-15, 'half way at tMax/2, etaMin at tMax');

  const wc = new optim.WarmupCosineLR(makeOpt(1), { warmupSteps: 2, totalSteps: 6, minLr: 0.1 });
  // Warmup 0.5, 1; cosine over 4 steps from 1 to 0.1: 1, 0.1 + 0.9 * (1 + cos(pi k / 4)) / 2; then 0.1.
  const want = [0.5, 1, 1, 0.1 + 0.45 * (1 + Math.SQRT1_2), 0.55, 0.1 + 0.45 * (1 - Math.SQRT1_2), 0.1, 0.1, 0.1];
  closeList(t, lrs(wc, 9), want, 'WarmupCosineLR');
  const ratio = new optim.WarmupCosineLR(makeOpt(2, 4), { warmupSteps: 0, totalSteps: 2, minLrRatio: 0.1 });
  t.same(ratio.getLastLr(), [2, 4]);
  ratio.step();
  ratio.step();
  closeList(t, ratio.getLastLr(), [0.2, 0.4], 'minLrRatio is per group');
});

t.test('SequentialLR hands over at the milestones, each scheduler counting from 0', async (t) => {
  const opt = makeOpt(1);
  const warm = new optim.LinearLR(opt, { startFactor: 0.25, totalIters: 3 });
  const cosine = new optim.CosineAnnealingLR(opt, { tMax: 4 });
  const seq = new optim.SequentialLR(opt, { schedulers: [warm, cosine], milestones: [3] });
  const want = [0.25, 0.5, 0.75, 1, 0.5 * (1 + Math.SQRT1_2), 0.5, 0.5 * (1 - Math.SQRT1_2), 0];
  closeList(t, lrs(seq, 8), want, 'linear warmup, then cosine');
  t.throws(() => new optim.SequentialLR(opt, { schedulers: [warm, cosine], milestones: [] }), kiln.ValueError);
  t.throws(() => new optim.SequentialLR(opt, { schedulers: [warm, cosine, cosine], milestones: [3, 2] }), kiln.ValueError);
  t.throws(() => new optim.SequentialLR(makeOpt(), { schedulers: [warm], milestones: [] }), kiln.ValueError, 'another optimizer');
});

t.test('stateDict resumes a schedule exactly; schedulers share the initial lr', async (t) => {
  const opt = makeOpt(1, 3);
  const s = new optim.WarmupCosineLR(opt, { warmupSteps: 3, totalSteps: 20 });
  for (let i = 0; i < 7; i++) s.step();
  const sd = s.stateDict();
  const optState = opt.stateDict();
  const opt2 = makeOpt(5, 5);
  opt2.loadStateDict(optState);
  // As in PyTorch, lastEpoch is the step before the one the constructor applies.
  const s2 = new optim.WarmupCosineLR(opt2, { warmupSteps: 3, totalSteps: 20, lastEpoch: sd.lastEpoch - 1 });
  t.same(s2.getLastLr(), s.getLastLr(), 'constructed at lastEpoch with initialLr restored by the optimizer state');
  const s3 = new optim.WarmupCosineLR(makeOpt(9, 9), { warmupSteps: 3, totalSteps: 20 });
  s3.loadStateDict(sd);
  t.same(s3.getLastLr(), s.getLastLr(), 'loadStateDict sets the lrs of that step');
  const rest = [s, s2, s3].map((x) => lrs(x, 15, 1));
  t.same(rest[1], rest[0]);
  t.same(rest[2], rest[0]);
  t.throws(() => s3.loadStateDict({ lastEpoch: 1.5, baseLrs: [1, 3] }), kiln.ValueError);
  t.throws(() => s3.loadStateDict({ lastEpoch: 1, baseLrs: [1] }), kiln.ValueError);
  t.throws(() => new optim.StepLR(makeOpt(), { stepSize: 2, gamma: 0.1, lastEpoch: 4 }), kiln.ValueError, 'resuming needs initialLr');

  const shared = makeOpt(0.8);
  new optim.StepLR(shared, { stepSize: 1, gamma: 0.5 });
  const second = new optim.LinearWarmupLR(shared, { warmupSteps: 2 });
  t.same(second.baseLrs, [0.8], 'the second scheduler scales the initial lr, not the first one\'s current lr');
});

t.test('bad scheduler arguments are ValueErrors', async (t) => {
  const opt = makeOpt();
  t.throws(() => new optim.StepLR(opt, { stepSize: 0 }), kiln.ValueError);
  t.throws(() => new optim.StepLR(opt, { stepSize: 1.5 }), kiln.ValueError);
  t.throws(() => new optim.CosineAnnealingLR(opt, { tMax: 0 }), kiln.ValueError);
  t.throws(() => new optim.LinearLR(opt, { startFactor: 0 }), kiln.ValueError);
  t.throws(() => new optim.LambdaLR(makeOpt(1, 2), { lrLambda: [(s: number) => s] }), kiln.ValueError, 'one lambda per group');
  t.throws(() => new optim.WarmupCosineLR(opt, { warmupSteps: 5, totalSteps: 4 }), kiln.ValueError);
  t.throws(() => new optim.WarmupCosineLR(opt, { warmupSteps: 1, totalSteps: 4, minLr: 0.1, minLrRatio: 0.1 }), kiln.ValueError);
  t.throws(() => new optim.MultiStepLR(opt, { milestones: [-1] }), kiln.ValueError);
  t.throws(() => new optim.StepLR(opt, { stepSize: 2, lastEpoch: -2 }), /lastEpoch must be an integer >= -1, got -2/);
});

t.test('every scheduler takes an options object; the old positional form is a clear error', async (t) => {
  const opt = makeOpt();
  const positional: Array<[string, () => unknown]> = [
    ['StepLR', () => new optim.StepLR(opt, 30 as never)],
    ['MultiStepLR', () => new optim.MultiStepLR(opt, [30, 80] as never)],
    ['ExponentialLR', () => new optim.ExponentialLR(opt, 0.9 as never)],
    ['LambdaLR', () => new optim.LambdaLR(opt, ((s: number) => s) as never)],
    ['LinearLR', () => new optim.LinearLR(opt, 0.5 as never)],
    ['LinearWarmupLR', () => new optim.LinearWarmupLR(opt, 10 as never)],
    ['CosineAnnealingLR', () => new optim.CosineAnnealingLR(opt, 100 as never)],
    ['WarmupCosineLR', () => new optim.WarmupCosineLR(opt, 10 as never)],
    ['SequentialLR', () => new optim.SequentialLR(opt, [] as never)],
  ];
  for (const [name, make] of positional) {
    t.throws(make, { name: 'ValueError', message: new RegExp(`^${name}: expected an options object like \\{ .* \\} after the optimizer, got `) }, name);
  }
});
