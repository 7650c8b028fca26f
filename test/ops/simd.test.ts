// The vectorized CPU kernels run the same source as an AVX2+FMA clone and a baseline (x86-64-v2)
// clone, picked at run time. CI machines take the AVX2 path, so this runs the kernels in two child
// processes, one forced onto the baseline clones (KILN_SIMD=baseline), and compares the results.
import t from 'tap';
import * as path from 'path';
import { spawnSync } from 'child_process';

const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');
// Fixed inputs covering exp's range, masked rows and a long cross-entropy row (several blocks).
const script = `
const kiln = require(${JSON.stringify(dist)});
const x = kiln.linspace(-100, 90, 4099, { dtype: 'float32' });
const rows = kiln.linspace(-8, 8, 3 * 2500, { dtype: 'float32' }).reshape(3, 2500).sin().mul(8);
const logits = rows.clone().requiresGrad_();
const loss = kiln.crossEntropy(logits, kiln.tensor([5, 2499, 1000]), { labelSmoothing: 0.1 });
loss.backward();
const out = {
  simd: kiln.buildInfo().simd,
  exp: Array.from(x.exp().dataSync()),
  tanh: Array.from(x.div(10).tanh().dataSync()),
  gelu: Array.from(x.div(10).gelu('tanh').dataSync()),
  sigmoid: Array.from(x.sigmoid().dataSync()),
  softmax: Array.from(rows.softmax(1).dataSync()),
  logSoftmax: Array.from(rows.logSoftmax(1).dataSync()),
  loss: loss.item(),
  grad: Array.from(logits.grad.dataSync()),
};
process.stdout.write(JSON.stringify(out));
`;

function run(env: Record<string, string>): Record<string, number[] | number | string> {
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 120_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

t.test('baseline and AVX2 clones of the vectorized kernels agree', async (t) => {
  const fast = run({ KILN_SIMD: '' });
  const base = run({ KILN_SIMD: 'baseline' });
  t.equal(base.simd, 'baseline', 'KILN_SIMD=baseline selects the baseline clones');
  t.ok(fast.simd === 'avx2' || fast.simd === 'baseline');
  if (fast.simd === 'baseline') t.comment('this CPU has no AVX2+FMA: both runs used the baseline clones');
  for (const key of ['exp', 'tanh', 'gelu', 'sigmoid', 'softmax', 'logSoftmax', 'grad', 'loss'] as const) {
    const a = ([] as number[]).concat(fast[key] as number[]), b = ([] as number[]).concat(base[key] as number[]);
    t.equal(a.length, b.length);
    // FMA contraction differs between the clones: a few float32 ulps (relative to values above 1e-6).
    let worst = 0;
    for (let i = 0; i < a.length; i++) {
      if (Number.isNaN(a[i]) && Number.isNaN(b[i])) continue;
      worst = Math.max(worst, a[i] === b[i] ? 0 : Math.abs(a[i] - b[i]) / Math.max(Math.abs(b[i]), 1e-6));
    }
    t.ok(worst < 1e-5, `${key}: worst relative difference ${worst}`);
  }
});
