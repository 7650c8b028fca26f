// Printing tensors the way PyTorch does: values with shared formatting, summarized when large,
// followed by shape, dtype, device and grad information.
import type { Tensor } from './tensor';

const EDGE = 3;
const THRESHOLD = 1000;

function formatNumber(v: number, isInt: boolean, sci: boolean, digits: number): string {
  if (Number.isNaN(v)) return 'nan';
  if (!Number.isFinite(v)) return v > 0 ? 'inf' : '-inf';
  if (isInt) return String(v);
  if (sci) return v.toExponential(digits);
  return v.toFixed(digits);
}

/** Formats a tensor's values and metadata, e.g. `tensor([[1.0000, 2.0000]], shape=[1, 2], dtype=float32)`. */
export function formatTensor(t: Tensor): string {
  const flat = t.dataSync();
  const vals: number[] = Array.from(flat as ArrayLike<number | bigint>, (v) => Number(v));
  const isBool = t.dtype === 'bool';
  const isInt = t.dtype === 'int32' || t.dtype === 'int64' || isBool;
  const finite = vals.filter((v) => Number.isFinite(v));
  const maxAbs = finite.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  const minAbs = finite.filter((v) => v !== 0).reduce((m, v) => Math.min(m, Math.abs(v)), Infinity);
  const sci = !isInt && finite.length > 0 && (maxAbs >= 1e8 || (minAbs < 1e-4 && minAbs !== Infinity));
  const allWhole = !isInt && finite.every((v) => Number.isInteger(v));
  const digits = allWhole && !sci ? 1 : 4;
  const fmt = (v: number) => (isBool ? (v ? 'true' : 'false') : formatNumber(v, isInt, sci, digits));
  const width = vals.reduce((w, v) => Math.max(w, fmt(v).length), 1);
  const summarize = t.numel > THRESHOLD;

  const strides: number[] = [];
  let acc = 1;
  for (let i = t.ndim - 1; i >= 0; i--) {
    strides[i] = acc;
    acc *= t.shape[i];
  }
  const render = (d: number, base: number, indent: string): string => {
    if (d === t.ndim) return fmt(vals[base]).padStart(width);
    const n = t.shape[d];
    const idx: Array<number | null> = [];
    if (summarize && n > 2 * EDGE) {
      for (let i = 0; i < EDGE; i++) idx.push(i);
      idx.push(null);
      for (let i = n - EDGE; i < n; i++) idx.push(i);
    } else for (let i = 0; i < n; i++) idx.push(i);
    const parts = idx.map((i) => (i === null ? '...' : render(d + 1, base + i * strides[d], indent + ' ')));
    if (d === t.ndim - 1) return `[${parts.join(', ')}]`;
    const sep = ',' + '\n'.repeat(t.ndim - 1 - d) + indent + ' ';
    return `[${parts.join(sep)}]`;
  };
  const body = t.ndim === 0 ? fmt(vals[0]) : render(0, 0, '       ');
  const meta = [`shape=[${t.shape.join(', ')}]`, `dtype=${t.dtype}`];
  if (t.device !== 'cpu') meta.push(`device='${t.device}'`);
  if (t.gradFn) meta.push(`gradFn=${t.gradFn.name}`);
  else if (t.requiresGrad) meta.push('requiresGrad=true');
  return `tensor(${body}, ${meta.join(', ')})`;
}
