// float16 on CUDA, where several kernels take no float16: the dtype policy computes those in float32
// (out of place through defineOp, in place through a float32 copy written back), so a float16 model
// can run backward twice (in-place accumulation) and match float32 to float16 precision. And
// bfloat16 logits under autocast: crossEntropy reads them as they are (no float32 copy) and gives a
// float32 loss equal to the float32 computation on the same values.
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

  t.test('crossEntropy under autocast reads bfloat16 logits without a float32 copy', async (t) => {
    kiln.manualSeed(5);
    const rows = 4096, classes = 5000;
    const logits32 = kiln.randn([rows, classes]).mul(3).to('bfloat16').to('float32'); // bf16-exact values
    const target = kiln.randint(0, classes, [rows]);
    const ref = logits32.detach().requiresGrad_();
    const refLoss = kiln.crossEntropy(ref, target, { labelSmoothing: 0.1 });
    refLoss.backward();

    const x = logits32.to('bfloat16', 'cuda').requiresGrad_();
    const y = target.to({ device: 'cuda' });
    kiln.cuda.synchronize();
    const before = kiln.cuda.memoryStats().allocated;
    kiln.cuda.resetPeakMemoryStats();
    const loss = kiln.autocast({ dtype: 'bfloat16' }, () => kiln.crossEntropy(x, y, { labelSmoothing: 0.1 }));
    const peak = kiln.cuda.memoryStats().peakAllocated - before;
    t.equal(loss.dtype, 'float32', 'the loss is float32');
    t.ok(peak < rows * classes * 2, `the forward allocated ${peak} bytes, less than the bf16 logits themselves (no float32 copy)`);
    t.ok(Math.abs(loss.item() - refLoss.item()) < 1e-5 * refLoss.item(), `loss ${loss.item()} vs float32 ${refLoss.item()}`);
    loss.backward();
    t.equal(x.grad!.dtype, 'bfloat16');
    const got = Array.from(x.grad!.to('float32', 'cpu').dataSync() as Float32Array);
    const want = Array.from(ref.grad!.to('bfloat16').to('float32').dataSync() as Float32Array);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), 1e-6));
    t.ok(worst <= 2 ** -7, `gradients are the float32 ones rounded to bfloat16 (max relative difference ${worst})`);
    const plain = kiln.crossEntropy(x.detach(), y);
    t.equal(plain.dtype, 'bfloat16', 'outside autocast the loss follows the logits, as in PyTorch');
  });
}
