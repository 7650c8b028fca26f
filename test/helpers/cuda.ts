// What the GPU tests share: why a file is skipped on this machine, and the relative L2 error of a
// GPU result against its CPU twin.
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import { values } from './gradcheck';

/** false with a visible GPU, else the reason the GPU tests are skipped. */
export const cudaSkip: string | false = kiln.cuda.isAvailable() ? false : kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA';

/** ||a - b|| / ||b|| over every element (Infinity when the sizes differ). */
export function relErr(a: Tensor, b: Tensor): number {
  const x = values(a), y = values(b);
  if (x.length !== y.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}
