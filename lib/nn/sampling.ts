// Token sampling for generation: greedy, temperature, top-k and top-p (nucleus) over logits [B, V].
// The uniform draws come from kiln's seeded generator, so sampling repeats after kiln.manualSeed.
// Filtering and the inverse-CDF draw run in JavaScript on the read-back logits: choosing the next
// token needs its value on the host anyway.
import type { DType } from '../dtype';
import { ShapeError, ValueError } from '../errors';
import { tensor } from '../ops/creation';
import { rand } from '../ops/random';
import { argmax } from '../ops/reduce';
import { shapeStr } from '../shape';
import type { Tensor } from '../tensor';

/** How sampleLogits (and GPT.generate) picks the next token from logits. */
export interface SamplingOptions {
  /** Divides the logits; lower is more deterministic, 0 means greedy (default 1). */
  temperature?: number;
  /** Sample only among the k most likely tokens. */
  topK?: number | null;
  /** Sample only among the most likely tokens whose probabilities add up to at least p. */
  topP?: number | null;
  /** Take the most likely token (argmax). */
  greedy?: boolean;
}

function checkOptions(opts: SamplingOptions): void {
  const { temperature = 1, topK, topP } = opts;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new ValueError('sample', `temperature must be >= 0, got ${temperature}`);
  if (topK != null && (!Number.isInteger(topK) || topK <= 0)) throw new ValueError('sample', `topK must be a positive integer, got ${topK}`);
  if (topP != null && !(topP > 0 && topP <= 1)) throw new ValueError('sample', `topP must be in (0, 1], got ${topP}`);
}

/** One draw from softmax(row / T) restricted by topK / topP; u is uniform in [0, 1). */
function sampleRow(row: ArrayLike<number>, u: number, invT: number, topK: number | null, topP: number): number {
  let order = Int32Array.from({ length: row.length }, (_, i) => i);
  if (topK !== null || topP < 1) {
    order.sort((a, b) => row[b] - row[a]);
    if (topK !== null) order = order.subarray(0, Math.min(topK, row.length));
  }
  let max = -Infinity;
  for (let j = 0; j < order.length; j++) max = Math.max(max, row[order[j]]);
  const w = new Float64Array(order.length);
  let total = 0;
  for (let j = 0; j < order.length; j++) total += w[j] = Math.exp((row[order[j]] - max) * invT);
  let n = order.length;
  if (topP < 1) {
    // order is sorted by probability here: keep the shortest prefix reaching topP.
    let cum = 0;
    for (let j = 0; j < n; j++) {
      cum += w[j];
      if (cum >= topP * total) {
        n = j + 1;
        total = cum;
        break;
      }
    }
  }
  let r = u * total;
  for (let j = 0; j < n; j++) {
    r -= w[j];
    if (r < 0) return order[j];
  }
  return order[n - 1];
}

/**
 * The next token for each row of logits [B, V], as a [B, 1] tensor of dtype (default int64) on the
 * logits' device.
 */
export function sampleLogits(logits: Tensor, opts: SamplingOptions & { dtype?: DType } = {}): Tensor {
  checkOptions(opts);
  if (logits.ndim !== 2) throw new ShapeError('sample', `expects logits [B, V], got ${shapeStr(logits.shape)}`);
  const dtype = opts.dtype ?? 'int64';
  const temperature = opts.temperature ?? 1;
  if (opts.greedy || temperature === 0) {
    const best = argmax(logits, -1, true);
    const out = best.to(dtype);
    if (out !== best) best.dispose();
    return out;
  }
  const [B, V] = logits.shape;
  const values = logits.dataSync() as Float32Array | Float64Array;
  const draws = rand([B], { dtype: 'float64' });
  const u = draws.dataSync() as Float64Array;
  draws.dispose();
  const tokens = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    tokens[b] = sampleRow(values.subarray(b * V, (b + 1) * V), u[b], 1 / temperature, opts.topK ?? null, opts.topP ?? 1);
  }
  return tensor(tokens, { shape: [B, 1], dtype, device: logits.device });
}
