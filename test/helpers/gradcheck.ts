// Test helpers: central finite-difference gradient checks in float64 and approximate comparison.
// gradcheck needs nothing but tensor(), backward(gradient) and dataSync(), so it can check any op.
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';

/** A deterministic pseudo-random generator (mulberry32) for test inputs. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Uniform values in [lo, hi) as a float64 tensor (or the given dtype). */
export function randomTensor(shape: number[], seed: number, lo = -1, hi = 1, dtype: kiln.DType = 'float64'): Tensor {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const vals = Array.from({ length: n }, () => lo + (hi - lo) * r());
  return kiln.tensor(Float64Array.from(vals), { shape, dtype });
}

function flat(t: Tensor): number[] {
  return Array.from(t.dataSync() as ArrayLike<number | bigint>, Number);
}

export interface GradcheckResult {
  ok: boolean;
  maxError: number;
  detail: string;
}

/**
 * Checks the gradients autograd computes for f at inputs against central finite differences.
 * Inputs must be float64. f's output is contracted with a fixed random tensor G, so any output shape
 * works: the checked scalar is sum(f(x) * G). Inputs listed in `skip` are held constant.
 */
export function gradcheck(
  f: (...xs: Tensor[]) => Tensor,
  inputs: Tensor[],
  opts: { eps?: number; atol?: number; rtol?: number; skip?: number[]; seed?: number } = {},
): GradcheckResult {
  const eps = opts.eps ?? 1e-6;
  const atol = opts.atol ?? 1e-5;
  const rtol = opts.rtol ?? 1e-4;
  const skip = new Set(opts.skip ?? []);
  const leaves = inputs.map((x, i) => {
    const l = kiln.tensor(x.dataSync() as Float64Array, { shape: [...x.shape], dtype: x.dtype });
    if (!skip.has(i)) l.requiresGrad = true;
    return l;
  });
  const out = f(...leaves);
  const G = randomTensor([...out.shape], opts.seed ?? 1234, -1, 1, out.dtype);
  const g = flat(G);
  out.backward(G);
  const evalAt = (vals: number[][]): number => {
    return kiln.noGrad(() => {
      const xs = vals.map((v, i) => kiln.tensor(Float64Array.from(v), { shape: [...inputs[i].shape], dtype: inputs[i].dtype }));
      return dot(flat(f(...xs)), g);
    });
  };
  const base = inputs.map(flat);
  const analytic = leaves.map((leaf, i) => (skip.has(i) ? null : leaf.grad ? flat(leaf.grad) : new Array(base[i].length).fill(0)));
  return compareDifferences(base, analytic, evalAt, eps, atol, rtol);
}

/**
 * gradcheck for tensors f reads rather than takes (a module's parameters, float64): autograd's
 * gradients of sum(f() * G) with respect to each of params against central differences, each
 * element perturbed in place (and restored) under noGrad. The params' .grad is replaced.
 */
export function gradcheckParams(
  f: () => Tensor,
  params: Tensor[],
  opts: { eps?: number; atol?: number; rtol?: number; seed?: number } = {},
): GradcheckResult {
  for (const p of params) p.grad = null;
  const out = f();
  const G = randomTensor([...out.shape], opts.seed ?? 1234, -1, 1, out.dtype);
  const g = flat(G);
  out.backward(G);
  const analytic = params.map((p) => (p.grad ? flat(p.grad) : new Array(p.numel).fill(0)));
  const base = params.map(flat);
  const set = (vals: number[][]) => params.forEach((p, i) => p.copy_(kiln.tensor(Float64Array.from(vals[i]), { shape: [...p.shape], dtype: p.dtype })));
  const evalAt = (vals: number[][]): number =>
    kiln.noGrad(() => {
      set(vals);
      return dot(flat(f()), g);
    });
  try {
    return compareDifferences(base, analytic, evalAt, opts.eps ?? 1e-6, opts.atol ?? 1e-5, opts.rtol ?? 1e-4);
  } finally {
    kiln.noGrad(() => set(base));
  }
}

function dot(y: number[], g: number[]): number {
  let s = 0;
  for (let k = 0; k < y.length; k++) s += y[k] * g[k];
  return s;
}

/** Each analytic gradient element (null: skipped input) against central differences of evalAt. */
function compareDifferences(
  base: number[][],
  analytic: Array<number[] | null>,
  evalAt: (vals: number[][]) => number,
  eps: number,
  atol: number,
  rtol: number,
): GradcheckResult {
  let maxError = 0;
  const problems: string[] = [];
  analytic.forEach((a, i) => {
    if (!a) return;
    for (let k = 0; k < base[i].length; k++) {
      const plus = base.map((v) => [...v]);
      const minus = base.map((v) => [...v]);
      plus[i][k] += eps;
      minus[i][k] -= eps;
      const numeric = (evalAt(plus) - evalAt(minus)) / (2 * eps);
      const err = Math.abs(numeric - a[k]);
      maxError = Math.max(maxError, err);
      if (err > atol + rtol * Math.abs(numeric) && problems.length < 5) {
        problems.push(`input ${i} element ${k}: autograd ${a[k]} vs numeric ${numeric}`);
      }
    }
  });
  return { ok: problems.length === 0, maxError, detail: problems.join('; ') };
}

/** Max |a - b| over flattened values; throws on a length mismatch. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(d)) return Infinity;
    m = Math.max(m, d);
  }
  return m;
}

/** Flattened values of a tensor as plain numbers. */
export function values(t: Tensor): number[] {
  return flat(t);
}

/**
 * Runs step once (caches warm), then 20 more times, and checks that live tensors and their bytes
 * are what they were after the first: the op frees everything it allocates.
 */
export function expectSteadyMemory(t: { equal: (a: unknown, b: unknown, msg?: string) => unknown }, step: () => void): void {
  step();
  const before = kiln.memory();
  for (let i = 0; i < 20; i++) step();
  t.equal(kiln.memory().tensors, before.tensors, 'live tensors');
  t.equal(kiln.memory().bytes, before.bytes, 'bytes');
}
