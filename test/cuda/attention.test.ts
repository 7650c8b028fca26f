// flashAttention on a GPU against its CPU twin (skipped without one, like all of test/cuda): outputs
// and gradients of q, k and v for head dims 64 and 128, lengths that are not a multiple of the tiles,
// causal (also end-aligned, L < S) and not; float32, and bfloat16 against the CPU kernel run in
// float32 on the same bfloat16-rounded inputs. Also: head dims above the CUDA kernels' 128 take the
// unfused path in nn.scaledDotProductAttention.
import t from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import type { Tensor } from '../../lib/index';
import { randomTensor } from '../helpers/gradcheck';

function flat(x: Tensor): number[] {
  return Array.from(x.to('float32').cpu().dataSync() as ArrayLike<number>, Number);
}

function maxRel(a: Tensor, b: Tensor): number {
  const x = flat(a), y = flat(b);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]) / Math.max(1, Math.abs(y[i])));
  return m;
}

// Output and gradients of q, k, v on device (in dtype) from the same float32 values.
function run(q0: Tensor, k0: Tensor, v0: Tensor, g0: Tensor, causal: boolean, device: string, dtype: kiln.DType) {
  const [q, k, v] = [q0, k0, v0].map((x) => {
    const y = x.to({ dtype, device }).detach();
    y.requiresGrad = true;
    return y;
  });
  const out = kiln.flashAttention(q, k, v, { causal });
  out.backward(g0.to({ dtype, device }));
  return [out, q.grad!, k.grad!, v.grad!];
}

if (!kiln.cuda.isAvailable()) {
  t.plan(0, kiln.buildInfo().cuda ? 'no CUDA device visible' : 'kiln was built without CUDA');
} else {
  t.test('CUDA equals the CPU twin: float32 and bfloat16, outputs and gradients', async (t) => {
    const cases: Array<[number[], number]> = [
      [[2, 3, 77, 64], 77],
      [[1, 2, 130, 128], 130],
      [[2, 2, 9, 64], 150],
    ];
    let seed = 1;
    for (const [[B, H, L, D], S] of cases) {
      for (const causal of [false, true]) {
        const mk = (shape: number[]) => randomTensor(shape, (seed += 1), -1, 1, 'float32');
        const q = mk([B, H, L, D]), k = mk([B, H, S, D]), v = mk([B, H, S, D]), g = mk([B, H, L, D]);
        const cpu = run(q, k, v, g, causal, 'cpu', 'float32');
        const gpu = run(q, k, v, g, causal, 'cuda', 'float32');
        const names = ['out', 'dq', 'dk', 'dv'];
        for (let i = 0; i < 4; i++) {
          const err = maxRel(gpu[i], cpu[i]);
          t.ok(err < 1e-4, `float32 ${[B, H, L, D]} S=${S} causal=${causal} ${names[i]}: ${err}`);
        }
        // bfloat16: the CPU twin on the same rounded inputs, in float32.
        const r = (x: Tensor) => x.to('bfloat16').to('float32');
        const ref = run(r(q), r(k), r(v), r(g), causal, 'cpu', 'float32');
        const half = run(q, k, v, g, causal, 'cuda', 'bfloat16');
        for (let i = 0; i < 4; i++) {
          t.equal(half[i].dtype, 'bfloat16');
          const err = maxRel(half[i], ref[i]);
          t.ok(err < 3e-2, `bfloat16 ${[B, H, L, D]} S=${S} causal=${causal} ${names[i]}: ${err}`);
        }
      }
    }
  });

  t.test('nn picks the fused op on CUDA up to head dim 128 and the unfused path above', async (t) => {
    for (const D of [64, 160]) {
      const q = randomTensor([1, 2, 33, D], 1, -1, 1, 'float32').to('cuda');
      q.requiresGrad = true;
      const out = nn.scaledDotProductAttention(q, q, q, { isCausal: true });
      t.equal(out.gradFn?.name === 'flashAttention', D <= 128, `D=${D}`);
      const ref = nn.attention(q, q, q, { masks: [nn.causalMask(33, 33, { device: 'cuda' })] }).output;
      t.ok(maxRel(out, ref) < 1e-4);
    }
  });
}
