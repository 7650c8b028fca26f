// flashAttention (the fused, tiled attention op) against the unfused path nn.attention (matmul,
// masked softmax, matmul): outputs and gradients for head dims 16/64/128, lengths that are not a
// multiple of the 64-row tile, causal (also end-aligned, L < S) and not, float32 and float64;
// finite differences in float64; memory (no [L, S] tensor); where nn picks it (and where not); a
// GPT training run equal to the unfused path's; errors.
import t from 'tap';
import * as kiln from '../../lib/index';
import * as nn from '../../lib/nn';
import type { Tensor } from '../../lib/index';
import { gradcheck, randomTensor } from '../helpers/gradcheck';

function flat(x: Tensor): number[] {
  return Array.from(x.dataSync() as ArrayLike<number>, Number);
}

function maxRel(a: Tensor, b: Tensor): number {
  const x = flat(a), y = flat(b);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]) / Math.max(1, Math.abs(y[i])));
  return m;
}

// Output and gradients of q, k, v for the fused op and for the unfused path, under one output gradient.
function both(shapeQ: number[], S: number, causal: boolean, dtype: kiln.DType, seed: number) {
  const [B, H, L, D] = shapeQ;
  const mk = (shape: number[], s: number) => randomTensor(shape, s, -1, 1, dtype);
  const q0 = mk([B, H, L, D], seed), k0 = mk([B, H, S, D], seed + 1), v0 = mk([B, H, S, D], seed + 2);
  const g = mk([B, H, L, D], seed + 3);
  const run = (f: (q: Tensor, k: Tensor, v: Tensor) => Tensor) => {
    const [q, k, v] = [q0, k0, v0].map((x) => x.clone().detach());
    for (const x of [q, k, v]) x.requiresGrad = true;
    const out = f(q, k, v);
    out.backward(g);
    return [out, q.grad!, k.grad!, v.grad!];
  };
  const fused = run((q, k, v) => kiln.flashAttention(q, k, v, { causal }));
  const plain = run((q, k, v) => {
    const masks = causal ? [nn.causalMask(L, S)] : [];
    return nn.attention(q, k, v, { masks }).output;
  });
  return { fused, plain };
}

t.test('equals the unfused path: outputs and gradients', async (t) => {
  const cases: Array<[number[], number]> = [
    [[2, 3, 37, 16], 37],
    [[1, 2, 100, 64], 100],
    [[1, 1, 130, 128], 130],
    [[2, 1, 5, 16], 71], // end-aligned: 5 queries after 66 cached keys
  ];
  let seed = 10;
  for (const dtype of ['float64', 'float32'] as const) {
    const tol = dtype === 'float64' ? 1e-12 : 1e-5;
    for (const [shape, S] of cases) {
      for (const causal of [false, true]) {
        const { fused, plain } = both(shape, S, causal, dtype, (seed += 4));
        const names = ['out', 'dq', 'dk', 'dv'];
        for (let i = 0; i < 4; i++) {
          t.equal(fused[i].dtype, dtype);
          const err = maxRel(fused[i], plain[i]);
          t.ok(err < tol, `${dtype} ${JSON.stringify(shape)} S=${S} causal=${causal} ${names[i]}: ${err}`);
        }
      }
    }
  }
});

t.test('gradients match finite differences in float64', async (t) => {
  for (const causal of [false, true]) {
    const q = randomTensor([1, 2, 7, 5], 1), k = randomTensor([1, 2, 9, 5], 2), v = randomTensor([1, 2, 9, 5], 3);
    const r = gradcheck((a, b, c) => kiln.flashAttention(a, b, c, { causal, scale: 0.7 }), [q, k, v]);
    t.ok(r.ok, `causal=${causal}: ${r.detail}`);
  }
});

t.test('strided inputs (heads split from one projection) and a broadcast output gradient', async (t) => {
  const x = randomTensor([2, 67, 3, 2, 16], 5); // [B, T, q/k/v, H, D]
  x.requiresGrad = true;
  const [q, k, v] = [0, 1, 2].map((i) => x.select(2, i).transpose(1, 2));
  const out = kiln.flashAttention(q, k, v, { causal: true });
  out.sum().backward();
  const gFused = x.grad!.clone();
  x.grad = null;
  const [q2, k2, v2] = [0, 1, 2].map((i) => x.select(2, i).transpose(1, 2));
  const ref = nn.attention(q2, k2, v2, { masks: [nn.causalMask(67)] }).output;
  ref.sum().backward();
  t.ok(maxRel(out, ref) < 1e-12);
  t.ok(maxRel(gFused, x.grad!) < 1e-12);
});

t.test('holds no [L, S] tensor: memory grows with T, not T^2', async (t) => {
  const T = 1024, D = 16;
  const q = randomTensor([1, 1, T, D], 1, -1, 1, 'float32');
  const k = randomTensor([1, 1, T, D], 2, -1, 1, 'float32');
  const v = randomTensor([1, 1, T, D], 3, -1, 1, 'float32');
  for (const x of [q, k, v]) x.requiresGrad = true;
  const square = T * T * 4; // one float32 [T, T] score matrix: 4 MiB
  kiln.resetPeakMemory();
  const base = kiln.memory().bytes;
  const out = kiln.flashAttention(q, k, v, { causal: true });
  out.sum().backward();
  const peak = kiln.memory().peakBytes - base;
  t.ok(peak < square / 4, `peak ${peak} bytes above the inputs, a [T, T] matrix is ${square}`);
});

t.test('nn picks the fused op where it applies and the unfused path elsewhere', async (t) => {
  const q = randomTensor([2, 2, 9, 8], 1), k = randomTensor([2, 2, 9, 8], 2), v = randomTensor([2, 2, 9, 8], 3);
  const fused = kiln.flashAttention(q, k, v, { causal: true });
  const sdpa = nn.scaledDotProductAttention(q, k, v, { isCausal: true });
  t.equal(sdpa.gradFn, null);
  t.same(flat(sdpa), flat(fused), 'causal sdpa is the fused op');
  q.requiresGrad = true;
  t.equal(nn.scaledDotProductAttention(q, k, v, { isCausal: true }).gradFn?.name, 'flashAttention');
  t.equal(nn.scaledDotProductAttention(q, k, v, { attnMask: nn.causalMask(9) }).gradFn?.name === 'flashAttention', false);
  t.equal(nn.scaledDotProductAttention(q, k, v, { dropoutP: 0.5 }).gradFn?.name === 'flashAttention', false);
  // MultiheadAttention: fused without weights, with weights the unfused path; both agree.
  const m = new nn.MultiheadAttention(8, 2, { dtype: 'float64' });
  const x = randomTensor([2, 11, 8], 4);
  const a = m.forward(x, x, x, { isCausal: true }).output;
  const b = m.forward(x, x, x, { isCausal: true, needWeights: true }).output;
  t.ok(maxRel(a, b) < 1e-12);
  // float16 on the CPU computes in float32.
  const h = kiln.flashAttention(q.detach().to('float16'), k.to('float16'), v.to('float16'));
  t.equal(h.dtype, 'float16');
});

t.test('GPT training: losses equal the unfused path within 1e-5', async (t) => {
  const cfg = { vocabSize: 23, blockSize: 80, nLayer: 2, nHead: 2, nEmbd: 32 };
  const idx = kiln.tensor(Int32Array.from({ length: 2 * 70 }, (_, i) => (i * 7 + 3) % 23), { shape: [2, 70], dtype: 'int32' });
  const tgt = kiln.tensor(Int32Array.from({ length: 2 * 70 }, (_, i) => (i * 5 + 1) % 23), { shape: [2, 70], dtype: 'int32' });
  const train = (fused: boolean) => {
    kiln.manualSeed(3);
    const model = new nn.GPT(cfg);
    const opt = new kiln.optim.AdamW(model.parameters(), { lr: 1e-2 });
    const losses: number[] = [];
    for (let step = 0; step < 5; step++) {
      const loss = kiln.tidy(() => {
        // The unfused path: every block's attention gets the causal mask as a tensor.
        const x = fused ? model.forward(idx).logits : unfusedLogits(model, idx);
        return kiln.keep(nn.crossEntropy(x.reshape(-1, 23), tgt.reshape(-1)));
      });
      opt.zeroGrad();
      loss.backward();
      opt.step();
      losses.push(loss.item() as number);
      loss.dispose();
    }
    return losses;
  };
  const a = train(true), b = train(false);
  for (let i = 0; i < a.length; i++) t.ok(Math.abs(a[i] - b[i]) < 1e-5, `step ${i}: ${a[i]} vs ${b[i]}`);
  t.ok(a[4] < a[0], 'it learns');
});

// GPT's forward with every block given an explicit causal mask tensor (which the fused op does not take).
function unfusedLogits(model: nn.GPT, idx: Tensor): Tensor {
  const T = idx.shape[1];
  const mask = nn.causalMask(T);
  let x = model.wte.forward(idx).add(model.wpe.weight.narrow(0, 0, T));
  for (const block of model.blocks) x = (block as nn.GPTBlock).forward(x, mask);
  return model.lmHead.forward(model.lnF.forward(x));
}

t.test('errors name the op, shapes and dtypes', async (t) => {
  const q = randomTensor([1, 2, 4, 8], 1);
  t.throws(() => kiln.flashAttention(q, randomTensor([1, 2, 4, 6], 2), randomTensor([1, 2, 4, 6], 3)), { name: 'ShapeError', message: /flashAttention.*\[1, 2, 4, 6\]/ });
  t.throws(() => kiln.flashAttention(q, randomTensor([1, 2, 3, 8], 2), randomTensor([1, 2, 3, 8], 3), { causal: true }), { name: 'ShapeError', message: /at most as many queries/ });
  t.throws(() => kiln.flashAttention(q.reshape(2, 4, 8), q, q), { name: 'ShapeError' });
  t.throws(() => kiln.flashAttention(q, q.to('float32'), q), { name: 'DTypeError', message: /float64, float32/ });
  t.throws(() => kiln.flashAttention(q, q, q, { scale: NaN }), { name: 'ValueError' });
});
