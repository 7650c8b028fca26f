// float16 on CUDA, where several kernels take no float16: the dtype policy computes those in float32
// (out of place through defineOp, in place through a float32 copy written back), so a float16 model
// can run backward twice (in-place accumulation) and match float32 to float16 precision.
import t from 'tap';
import * as kiln from '../../lib/index';

if (!kiln.cuda.isAvailable()) {
  t.plan(0, 'no CUDA device');
} else {
  t.test('float16 in-place ops and gradient accumulation on CUDA', async (t) => {
    kiln.manualSeed(3);
    const x32 = kiln.randn([64, 33]);
    const x = x32.to('float16').to('float16', 'cuda');
    x.add_(kiln.ones([33], { dtype: 'float16', device: 'cuda' }), 2);
    x.mul_(0.5);
    const ref = x32.to('float16').to('float32').add(2).mul(0.5);
    const got = x.to('float32', 'cpu');
    const err = Math.max(...Array.from(got.sub(ref).abs().dataSync() as Float32Array));
    t.ok(err < 2e-2, `add_ and mul_ in float16 match float32 (max error ${err})`);
    const w = kiln.randn([33, 8]).to('float16').to('float16', 'cuda').requiresGrad_();
    x.matmul(w).square().mean().backward();
    const once = w.grad!.to('float32', 'cpu');
    x.matmul(w).square().mean().backward();
    const twice = w.grad!.to('float32', 'cpu');
    t.equal(w.grad!.dtype, 'float16');
    const diff = Math.max(...Array.from(twice.sub(once.mul(2)).abs().dataSync() as Float32Array));
    t.ok(diff < 1e-2 * Math.max(1, ...Array.from(once.abs().dataSync() as Float32Array)), `the second backward adds in place (${diff})`);
  });
}
