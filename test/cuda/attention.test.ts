// flashAttention on a GPU against its CPU twin (skipped without one, like all of test/cuda): outputs
// and gradients of q, k and v for head dims 64 and 128, lengths that are not a multiple of the tiles,
// causal (also end-aligned, L < S) and not; float32, and bfloat16 against the CPU kernel run in
// float32 on the same bfloat16-rounded inputs. bfloat16 at head dims 64 and 128 runs on the tensor-core
// kernels (native/cuda/attention_mma.cu): checked over lengths around their 64-row tiles, end-aligned
// causal, several heads, the non-contiguous [B, T, H, D] -> [B, H, T, D] views nn makes, and a GPT-2
// shaped problem (also for run-to-run determinism). Also: head dims above the CUDA kernels' 128 take
// the unfused path in nn.scaledDotProductAttention.
import t, { Test } from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import type { Tensor } from '../../lib/index';
import { randomTensor } from '../helpers/gradcheck';

function flat(x: Tensor): number[] {
  return Array.from(x.to('float32').cpu().contiguous().dataSync() as ArrayLike<number>, Number);
}

function maxRel(a: Tensor, b: Tensor): number {
  const x = flat(a), y = flat(b);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]) / Math.max(1, Math.abs(y[i])));
  return m;
}

// Output and gradients of q, k, v on device (in dtype) from the same float32 values [B, H, T, D].
// strided: the leaves are [B, T, H, D] and the op sees their transpose(1, 2) views, as in nn; the
// gradients come back as [B, H, T, D] either way.
function run(
  q0: Tensor, k0: Tensor, v0: Tensor, g0: Tensor, causal: boolean, device: string, dtype: kiln.DType, strided = false,
) {
  const leaves = [q0, k0, v0].map((x) => {
    const y = (strided ? x.transpose(1, 2).contiguous() : x).to({ dtype, device }).detach();
    y.requiresGrad = true;
    return y;
  });
  const [q, k, v] = strided ? leaves.map((x) => x.transpose(1, 2)) : leaves;
  const out = kiln.flashAttention(q, k, v, { causal });
  out.backward(g0.to({ dtype, device }));
  const grads = leaves.map((x) => (strided ? x.grad!.transpose(1, 2) : x.grad!));
  return [out, ...grads];
}

const NAMES = ['out', 'dq', 'dk', 'dv'];
// bfloat16 on the GPU against the CPU twin in float32 on the same bfloat16-rounded inputs.
function checkHalf(
  t: Test, what: string, q: Tensor, k: Tensor, v: Tensor, g: Tensor, causal: boolean, strided: boolean,
) {
  const r = (x: Tensor) => x.to('bfloat16').to('float32');
  const ref = run(r(q), r(k), r(v), r(g), causal, 'cpu', 'float32');
  const half = run(q, k, v, g, causal, 'cuda', 'bfloat16', strided);
  for (let i = 0; i < 4; i++) {
    t.equal(half[i].dtype, 'bfloat16');
    const err = maxRel(half[i], ref[i]);
    t.ok(err < 3e-2, `bfloat16 ${what} ${NAMES[i]}: ${err}`);
  }
  return half;
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
        for (let i = 0; i < 4; i++) {
          const err = maxRel(gpu[i], cpu[i]);
          t.ok(err < 1e-4, `float32 ${[B, H, L, D]} S=${S} causal=${causal} ${NAMES[i]}: ${err}`);
        }
        checkHalf(t, `${[B, H, L, D]} S=${S} causal=${causal}`, q, k, v, g, causal, false);
      }
    }
  });

  t.test('bfloat16 tensor-core kernels (head dims 64 and 128) equal the CPU twin', async (t) => {
    // [L, S]: L = S around the 64-row tiles, then end-aligned causal L < S and L != S unmasked.
    const lengths: Array<[number, number]> = [
      [1, 1], [17, 17], [64, 64], [100, 100], [257, 257], [17, 100], [64, 257], [130, 70],
    ];
    let seed = 100;
    for (const D of [64, 128]) {
      for (const [L, S] of lengths) {
        for (const causal of [false, true]) {
          if (causal && L > S) continue;
          seed += 1;
          // Every other case: the strided views nn makes, and q spread wider so the softmax is peaked
          // (the online max moves from tile to tile).
          const strided = seed % 2 === 1, spread = strided ? 4 : 1;
          const B = 2, H = strided ? 3 : 2;
          const mk = (shape: number[], lo = -1, hi = 1) => randomTensor(shape, (seed += 7), lo, hi, 'float32');
          const q = mk([B, H, L, D], -spread, spread), k = mk([B, H, S, D]), v = mk([B, H, S, D]), g = mk([B, H, L, D]);
          checkHalf(t, `[${[B, H, L, D]}] S=${S} causal=${causal} strided=${strided}`, q, k, v, g, causal, strided);
        }
      }
    }
  });

  t.test('bfloat16 tensor-core kernels on a GPT-2 shape: B=2, H=12, T=1024, D=64, causal', async (t) => {
    const [B, H, T, D] = [2, 12, 1024, 64];
    const mk = (seed: number) => randomTensor([B, H, T, D], seed, -1, 1, 'float32');
    const q = mk(11), k = mk(12), v = mk(13), g = mk(14);
    const first = checkHalf(t, `[${[B, H, T, D]}] causal`, q, k, v, g, true, true);
    // No atomics: a second run gives the same bits.
    const again = run(q, k, v, g, true, 'cuda', 'bfloat16', true);
    for (let i = 0; i < 4; i++) t.equal(maxRel(again[i], first[i]), 0, `run-to-run ${NAMES[i]}`);
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
