// kiln.cuda.profileKernels on a GPU: every kernel call is charged, the families add up to the GPU
// span, a big matmul dominates a chain of small elementwise ops, and the hooks are gone afterwards.
import t from 'tap';
import * as kiln from '../../lib/index';

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  t.test('GPU time per kernel and family', async (t) => {
    const a = kiln.randn([4096, 4096], { device: 'cuda' });
    const small = kiln.randn([256], { device: 'cuda' });
    kiln.cuda.synchronize();
    const p = kiln.cuda.profileKernels(() =>
      kiln.tidy(() => {
        const big = a.matmul(a).sum();
        let s = small;
        for (let i = 0; i < 20; i++) s = s.mul(1.01).add(0.5);
        return big.add(s.sum());
      }),
    );
    t.equal(p.result.shape.length, 0, 'the result comes back');
    const bmm = p.kernels.find((k) => k.name === 'bmm');
    t.ok(bmm && bmm.calls === 1, 'one matmul');
    t.equal(p.kernels[0].name, 'bmm', `the 4096^3 matmul costs most: ${JSON.stringify(p.kernels.slice(0, 3))}`);
    t.ok(p.kernels.some((k) => k.name === 'unary:mul_scalar' && k.calls === 20), 'elementwise calls are counted by op');
    const sum = Object.values(p.families).reduce((x, y) => x + y, 0);
    t.ok(Math.abs(sum - p.gpuMs) < 1e-6 * Math.max(1, p.gpuMs), 'families add up to the GPU span');
    t.ok(p.gpuMs > 0 && p.hostMs > 0);
    const again = kiln.cuda.profileKernels(() => small.add(1));
    t.equal(again.kernels.reduce((n, k) => n + k.calls, 0), 1, 'a new profile starts from nothing');
  });
}
