// Plain JavaScript references for the nn tests: small dense matrices as number[][] and the maths of
// linear layers, norms, activations and attention written out with loops, independent of kiln's ops.
import type { Tensor } from '../../lib/index';
import type * as nn from '../../lib/nn';
import { values } from '../helpers/gradcheck';

export type Mat = number[][];

/** A tensor's values as matrices: [..., R, C] -> Mat[] over the leading dims (a 2-D tensor gives one). */
export function mats(t: Tensor): Mat[] {
  const v = values(t);
  const C = t.shape[t.ndim - 1], R = t.shape[t.ndim - 2];
  const out: Mat[] = [];
  for (let o = 0; o < v.length; o += R * C) {
    out.push(Array.from({ length: R }, (_, r) => v.slice(o + r * C, o + (r + 1) * C)));
  }
  return out;
}
export function mat(t: Tensor): Mat {
  return mats(t)[0];
}
export function vec(t: Tensor): number[] {
  return values(t);
}

export function matmul(a: Mat, b: Mat): Mat {
  return a.map((row) => b[0].map((_, j) => row.reduce((s, x, k) => s + x * b[k][j], 0)));
}
export function transpose(a: Mat): Mat {
  return a[0].map((_, j) => a.map((row) => row[j]));
}
/** x W^T + b for x [N, in], W [out, in]. */
export function linear(x: Mat, w: Mat, b?: number[] | null): Mat {
  return matmul(x, transpose(w)).map((row) => row.map((v, j) => v + (b ? b[j] : 0)));
}
export function add(a: Mat, b: Mat): Mat {
  return a.map((row, i) => row.map((v, j) => v + b[i][j]));
}
export function mapMat(a: Mat, f: (v: number, i: number, j: number) => number): Mat {
  return a.map((row, i) => row.map((v, j) => f(v, i, j)));
}
/** Row-wise softmax; a row of all -Infinity gives NaN like the real thing. */
export function softmaxRows(a: Mat): Mat {
  return a.map((row) => {
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const s = e.reduce((x, y) => x + y, 0);
    return e.map((v) => v / s);
  });
}
export function layerNormRows(a: Mat, w?: number[] | null, b?: number[] | null, eps = 1e-5): Mat {
  return a.map((row) => {
    const mean = row.reduce((s, v) => s + v, 0) / row.length;
    const variance = row.reduce((s, v) => s + (v - mean) ** 2, 0) / row.length;
    return row.map((v, j) => ((v - mean) / Math.sqrt(variance + eps)) * (w ? w[j] : 1) + (b ? b[j] : 0));
  });
}
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
}
/** Exact GELU; erf by its Taylor series below 3 and its asymptotic expansion above (error < 1e-7). */
export function geluErf(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}
function erf(x: number): number {
  const ax = Math.abs(x);
  let r: number;
  if (ax < 3) {
    let term = ax, sum = ax;
    for (let n = 1; n < 100; n++) {
      term *= (-ax * ax) / n;
      sum += term / (2 * n + 1);
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    r = 1 - Math.exp(-ax * ax) / (ax * Math.sqrt(Math.PI)) * (1 - 1 / (2 * ax * ax) + 3 / (4 * ax ** 4));
  }
  return x < 0 ? -r : r;
}

/**
 * One head of attention: softmax(q k^T / sqrt(d) + mask(i, j)) v (mask -Infinity blocks a score).
 * Returns the output and the probabilities.
 */
export function attendRef(q: Mat, k: Mat, v: Mat, mask: (i: number, j: number) => number = () => 0): { out: Mat; p: Mat } {
  const scale = 1 / Math.sqrt(q[0].length);
  const scores = mapMat(matmul(q, transpose(k)), (s, i, j) => s * scale + mask(i, j));
  const p = softmaxRows(scores);
  return { out: matmul(p, v), p };
}

/** Columns c0..c0+n of a. */
export function cols(a: Mat, c0: number, n: number): Mat {
  return a.map((row) => row.slice(c0, c0 + n));
}
/** Concatenates matrices side by side. */
export function hcat(parts: Mat[]): Mat {
  return parts[0].map((_, i) => parts.flatMap((p) => p[i]));
}

/** Max |a - b| over two equally shaped nested arrays. */
export function maxDiff(a: number[] | Mat | Mat[], b: number[] | Mat | Mat[]): number {
  const fa = (a as unknown[]).flat(3) as number[], fb = (b as unknown[]).flat(3) as number[];
  if (fa.length !== fb.length) throw new Error(`length ${fa.length} vs ${fb.length}`);
  let m = 0;
  for (let i = 0; i < fa.length; i++) {
    if (Number.isNaN(fa[i]) !== Number.isNaN(fb[i])) return Infinity;
    if (!Number.isNaN(fa[i])) m = Math.max(m, Math.abs(fa[i] - fb[i]));
  }
  return m;
}

/** Sample mean and standard deviation. */
export function stats(v: number[]): { mean: number; std: number; min: number; max: number } {
  const mean = v.reduce((s, x) => s + x, 0) / v.length;
  const std = Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / (v.length - 1));
  return { mean, std, min: Math.min(...v), max: Math.max(...v) };
}

/** The additive score mask of batch element b, head h: -Infinity blocks. */
export type MaskFn = (b: number, h: number, i: number, j: number) => number;
export const blockIf = (f: (b: number, h: number, i: number, j: number) => boolean): MaskFn => (b, h, i, j) => (f(b, h, i, j) ? -Infinity : 0);

/** The module's maths per batch element and head, from its current weights. */
export function mhaRef(m: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor, mask: MaskFn = () => 0) {
  const E = m.embedDim, H = m.numHeads, D = E / H;
  const bias = m.inProjBias ? values(m.inProjBias) : null;
  const w = (i: number): Mat => (m.inProjWeight ? mat(m.inProjWeight).slice(i * E, (i + 1) * E) : mat([m.qProjWeight, m.kProjWeight, m.vProjWeight][i]!));
  const b = (i: number) => (bias ? bias.slice(i * E, (i + 1) * E) : null);
  const qs = mats(query), ks = mats(key), vs = mats(value);
  const out: Mat[] = [], avg: Mat[] = [], perHead: Mat[][] = [];
  qs.forEach((qx, bi) => {
    const q = linear(qx, w(0), b(0)), k = linear(ks[bi], w(1), b(1)), v = linear(vs[bi], w(2), b(2));
    const heads = Array.from({ length: H }, (_, h) => attendRef(cols(q, h * D, D), cols(k, h * D, D), cols(v, h * D, D), (i, j) => mask(bi, h, i, j)));
    out.push(linear(hcat(heads.map((r) => r.out)), mat(m.outProj.weight), m.outProj.bias ? values(m.outProj.bias) : null));
    perHead.push(heads.map((r) => r.p));
    avg.push(heads[0].p.map((row, i) => row.map((_, j) => heads.reduce((s, r) => s + r.p[i][j], 0) / H)));
  });
  return { out, avg, perHead };
}
