// Gradient accumulation as the caller does it: k micro-batches, each backward on loss / k, then one
// optimizer step, equal one step on the whole batch (a small linear model, float64).
import t from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import * as optim from '../../lib/optim/index';
import { randomTensor } from '../helpers/gradcheck';

const vals = (x: Tensor): number[] => Array.from(x.dataSync() as Float64Array);

function model(seed: number): { w: Tensor; b: Tensor } {
  return { w: randomTensor([3, 4], seed).requiresGrad_(), b: randomTensor([3], seed + 1).requiresGrad_() };
}

/** Mean squared error of the linear model x W^T + b against y. */
function loss(m: { w: Tensor; b: Tensor }, x: Tensor, y: Tensor): Tensor {
  const d = x.matmul(m.w.t()).add(m.b).sub(y);
  return d.mul(d).mean();
}

t.test('k micro-batches with loss / k equal one big batch', async (t) => {
  const x = randomTensor([8, 4], 1), y = randomTensor([8, 3], 2);
  for (const k of [2, 4]) {
    const big = model(10), acc = model(10);
    const optBig = new optim.AdamW([big.w, big.b], { lr: 0.01 });
    const optAcc = new optim.AdamW([acc.w, acc.b], { lr: 0.01 });
    for (let step = 0; step < 3; step++) {
      kiln.tidy(() => loss(big, x, y).backward());
      const n = 8 / k;
      for (let i = 0; i < k; i++) {
        kiln.tidy(() => loss(acc, x.narrow(0, i * n, n), y.narrow(0, i * n, n)).div(k).backward());
      }
      const gb = vals(big.w.grad!), ga = vals(acc.w.grad!);
      t.ok(gb.every((g, j) => Math.abs(g - ga[j]) < 1e-14), `k = ${k}, step ${step}: accumulated gradient equals the big batch's`);
      optBig.step();
      optAcc.step();
      optBig.zeroGrad();
      optAcc.zeroGrad();
    }
    const pb = [...vals(big.w), ...vals(big.b)], pa = [...vals(acc.w), ...vals(acc.b)];
    t.ok(pb.every((p, j) => Math.abs(p - pa[j]) < 1e-12), `k = ${k}: same parameters after 3 steps`);
  }
});
