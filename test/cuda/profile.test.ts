// kiln.cuda.profileKernels on a GPU: every kernel call is charged, the families add up to the GPU
// span, a big matmul is charged at least what the GPU's peak allows (other test processes sharing
// the GPU can only add time), and a new profile starts from nothing.
import t from 'tap';
import * as kiln from '../../lib/index';

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  t.test('GPU time per kernel and family', async (t) => {
    const a = kiln.randn([8192, 8192], { device: 'cuda' }).to('bfloat16');
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
    // 2 * 8192^3 = 1.1e12 flops: at least 1.1 ms at the H200's 989 TFLOPS bf16 peak.
    t.ok(bmm!.ms >= 1.1, `the 8192^3 bf16 matmul is charged ${bmm!.ms} ms: ${JSON.stringify(p.kernels.slice(0, 3))}`);
    t.ok(p.kernels.some((k) => k.name === 'unary:mul_scalar' && k.calls === 20), 'elementwise calls are counted by op');
    const sum = Object.values(p.families).reduce((x, y) => x + y, 0);
    t.ok(Math.abs(sum - p.gpuMs) < 1e-6 * Math.max(1, p.gpuMs), 'families add up to the GPU span');
    t.ok(p.gpuMs > 0 && p.hostMs > 0);
    const again = kiln.cuda.profileKernels(() => small.add(1));
    t.equal(again.kernels.reduce((n, k) => n + k.calls, 0), 1, 'a new profile starts from nothing');
  });
}
