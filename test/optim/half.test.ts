// bfloat16 and float16 parameters stepped directly by AdamW and SGD: the update is computed in float32
// against float32 state and rounded to the parameter's dtype, so a half-precision run tracks the
// float32 run of the same problem; state dtypes, and state loaded into a half optimizer.
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import * as optim from '../../lib/optim/index';
import { rng } from '../helpers/gradcheck';

const vals = (x: Tensor): number[] => Array.from(x.to('float32').dataSync() as Float32Array);

/**
 * Minimizes 0.5 * |p - target|^2 from the same start in float32 and in dtype for steps steps: the
 * gradient p - target is computed from each run's own parameter values and given in its dtype.
 */
function race(dtype: kiln.DType, make: (p: Tensor) => optim.Optimizer<any>, steps: number): { full: number[]; half: number[]; target: number[] } {
  const r = rng(7);
  const n = 37;
  const target = Array.from({ length: n }, () => 2 * r() - 1);
  // A start both dtypes hold exactly, so the runs begin equal.
  const start = vals(kiln.tensor(Float64Array.from({ length: n }, () => 2 * r() - 1), { dtype }));
  const full = kiln.tensor(Float32Array.from(start), { requiresGrad: true });
  const half = kiln.tensor(Float32Array.from(start), { dtype, requiresGrad: true });
  const optFull = make(full);
  const opt = make(half);
  for (let s = 0; s < steps; s++) {
    for (const [p, o] of [[full, optFull], [half, opt]] as const) {
      const pv = vals(p);
      p.grad?.dispose();
      p.grad = kiln.tensor(Float32Array.from(pv.map((x, i) => x - target[i])), { dtype: p.dtype });
      o.step();
    }
  }
  return { full: vals(full), half: vals(half), target };
}

function maxDiff(a: number[], b: number[]): number {
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
}

const OPTIMIZERS: Array<[string, (p: Tensor) => optim.Optimizer<any>]> = [
  ['AdamW', (p) => new optim.AdamW([p], { lr: 0.01, weightDecay: 0.01 })],
  ['Adam (AMSGrad, L2)', (p) => new optim.Adam([p], { lr: 0.01, weightDecay: 0.1, amsgrad: true })],
  ['SGD with momentum', (p) => new optim.SGD([p], { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 })],
  ['SGD', (p) => new optim.SGD([p], { lr: 0.1 })],
];

for (const dtype of ['bfloat16', 'float16'] as const) {
  for (const [name, make] of OPTIMIZERS) {
    t.test(`${name} on ${dtype} parameters: each step is the float32 step rounded`, async (t) => {
      // A float32 twin set to the half parameter's value before every step, with the same gradient:
      // both keep the same float32 state, so the half step must be the float32 step, rounded.
      const r = rng(3);
      const start = Float32Array.from({ length: 41 }, () => 2 * r() - 1);
      const half = kiln.tensor(start, { dtype, requiresGrad: true });
      const twin = kiln.tensor(start, { requiresGrad: true });
      const oh = make(half), ot = make(twin);
      let same = true;
      for (let s = 0; s < 6; s++) {
        kiln.noGrad(() => twin.copy_(half));
        const g = Float32Array.from({ length: 41 }, () => 2 * r() - 1);
        half.grad?.dispose();
        twin.grad?.dispose();
        half.grad = kiln.tensor(g, { dtype });
        twin.grad = half.grad.to('float32');
        oh.step();
        ot.step();
        same &&= String(vals(half)) === String(vals(twin.to(dtype)));
      }
      t.ok(same, 'equal to the rounded float32 step, every step');
      for (const v of Object.values(oh.state.get(half)!)) if (v instanceof kiln.Tensor) t.equal(v.dtype, 'float32', 'state is float32');
      t.equal(half.dtype, dtype, 'the parameter keeps its dtype');
    });
  }

  t.test(`AdamW and SGD runs on ${dtype} parameters track the float32 runs`, async (t) => {
    // Each step rounds to the half dtype, so the runs drift apart by a few units in its last place.
    const tol = dtype === 'bfloat16' ? 0.08 : 0.01;
    for (const [name, make] of OPTIMIZERS) {
      const { full, half, target } = race(dtype, make, 60);
      t.ok(maxDiff(full, half) < tol, `${name}: max difference ${maxDiff(full, half).toFixed(4)} < ${tol}`);
      const dist = (x: number[]) => Math.hypot(...x.map((v, i) => v - target[i]));
      t.ok(Math.abs(dist(half) - dist(full)) < tol * 3, `${name}: as far from the optimum (${dist(half).toFixed(3)} vs ${dist(full).toFixed(3)})`);
    }
  });
}

t.test('state loaded into a bfloat16 optimizer becomes float32; a round trip resumes identically', async (t) => {
  const p = kiln.tensor([0.5, -0.25, 1], { dtype: 'bfloat16', requiresGrad: true });
  const q = kiln.tensor([0.5, -0.25, 1], { dtype: 'bfloat16', requiresGrad: true });
  const a = new optim.Adam([p], { lr: 0.1 });
  const b = new optim.Adam([q], { lr: 0.1 });
  p.grad = kiln.tensor([1, -2, 0.5], { dtype: 'bfloat16' });
  a.step();
  b.loadStateDict(a.stateDict());
  t.equal((b.state.get(q)!.expAvg as Tensor).dtype, 'float32');
  t.same(vals(b.state.get(q)!.expAvgSq as Tensor), vals(a.state.get(p)!.expAvgSq as Tensor));
  kiln.noGrad(() => q.copy_(p));
  q.grad = kiln.tensor([0.3, 0.3, -1], { dtype: 'bfloat16' });
  p.grad = kiln.tensor([0.3, 0.3, -1], { dtype: 'bfloat16' });
  a.step();
  b.step();
  t.same(vals(q), vals(p));
});
