// The fused ops GPT's blocks run, on CUDA against their CPU twins (skipped without a GPU):
// linearGelu (cuBLASLt's GELU_AUX_BIAS / GELU_BIAS epilogues, and the elementwise fallback where
// the aux leading dimension is not a multiple of 8 or the dtype has no such epilogue) and
// addLayerNorm (the register and row traversals), float32 and float64 forward and gradients, bfloat16
// within 1e-2 of float32; and a GPT's loss and gradients on CUDA against the CPU.
import t from 'tap';
import type { Test } from 'tap';
import * as kiln from '../../lib/index';
import type { Tensor } from '../../lib/index';
import * as nn from '../../lib/nn';
import { linearGelu } from '../../lib/ops/matmul';
import { addLayerNorm } from '../../lib/ops/norm';
import { cudaSkip as skip, relErr } from '../helpers/cuda';

/**
 * f on CPU and CUDA copies of inputs (dtype float32 or float64): outputs within fwdTol, gradients
 * (of sum(out * G) for a fixed random G) within gradTol, all norm-wise relative.
 */
function compare(t: Test, what: string, f: (...xs: Tensor[]) => Tensor, inputs: Tensor[], fwdTol: number, gradTol: number): void {
  const cpu = inputs.map((x) => x.clone().requiresGrad_());
  const gpu = inputs.map((x) => x.cuda().requiresGrad_());
  const yc = f(...cpu), yg = f(...gpu);
  t.equal(yg.device, 'cuda:0', `${what}: on the GPU`);
  t.same([yg.shape, yg.dtype], [yc.shape, yc.dtype], `${what}: shape and dtype`);
  const e = relErr(yg.cpu(), yc);
  t.ok(e <= fwdTol, `${what}: forward relative error ${e.toExponential(2)}`);
  const g = kiln.randn([...yc.shape], { dtype: yc.dtype });
  yc.backward(g);
  yg.backward(g.cuda());
  cpu.forEach((x, i) => {
    const ge = relErr(gpu[i].grad!.cpu(), x.grad!);
    t.ok(ge <= gradTol, `${what}: input ${i} gradient relative error ${ge.toExponential(2)}`);
  });
}

const rn = (dtype: kiln.DType, ...shape: number[]) => kiln.randn(shape, { dtype });

t.test('linearGelu on CUDA matches the CPU twin', { skip }, async (t) => {
  kiln.manualSeed(21);
  // cuBLASLt may evaluate the epilogue's tanh with the hardware approximation (about 2^-11 relative),
  // so the fused forward gets 5e-4; the gradients use the exact pre-activation it saves: 1e-5.
  for (const dtype of ['float32', 'float64'] as const) {
    const cases: Array<[string, number[], number]> = [
      ['[3, 77, 768] -> 3072 (GPT-2 fc)', [3, 77, 768], 3072],
      ['[2, 5, 96] -> 384', [2, 5, 96], 384],
      ['[2, 5, 96] -> 61 (aux ld not a multiple of 8: fallback)', [2, 5, 96], 61],
      ['[37, 65] -> 33', [37, 65], 33],
    ];
    for (const [name, xs, outF] of cases) {
      const inF = xs[xs.length - 1];
      const x = rn(dtype, ...xs), w = rn(dtype, outF, inF).mul(0.05), b = rn(dtype, outF);
      compare(t, `${dtype} ${name}`, (x, w, b) => linearGelu(x, w, b), [x, w, b], 5e-4, 1e-5);
      compare(t, `${dtype} ${name} without bias`, (x, w) => linearGelu(x, w), [x, w], 5e-4, 1e-5);
    }
    // A transposed input is a batched product (aux batch stride M * N).
    const xt = rn(dtype, 5, 6, 64);
    compare(t, `${dtype} transposed input`, (x, w, b) => linearGelu(x.transpose(0, 1), w, b), [xt, rn(dtype, 40, 64).mul(0.1), rn(dtype, 40)], 5e-4, 1e-5);
    // Without a graph the GELU_BIAS epilogue writes only the output.
    const x = rn(dtype, 7, 96), w = rn(dtype, 128, 96).mul(0.1), b = rn(dtype, 128);
    const e = relErr(kiln.noGrad(() => linearGelu(x.cuda(), w.cuda(), b.cuda())).cpu(), kiln.linear(x, w, b).gelu('tanh'));
    t.ok(e <= 5e-4, `${dtype} no grad: ${e.toExponential(2)}`);
  }
});

t.test('linearGelu in bfloat16 on CUDA agrees with float32 on the CPU within 1e-2', { skip }, async (t) => {
  kiln.manualSeed(22);
  for (const [xs, outF] of [[[3, 77, 768], 3072], [[2, 5, 96], 384], [[2, 5, 96], 61]] as Array<[number[], number]>) {
    const x = kiln.randn(xs), w = kiln.randn([outF, xs[xs.length - 1]]).mul(0.05), b = kiln.randn([outF]);
    const ref = kiln.linear(x, w, b).gelu('tanh');
    const bf = (v: Tensor) => v.cuda().to('bfloat16');
    t.ok(relErr(linearGelu(bf(x), bf(w), bf(b)).float().cpu(), ref) <= 1e-2, `${JSON.stringify(xs)} -> ${outF}`);
    // Under autocast from float32 leaves, as GPT trains: bfloat16 out, float32 gradients.
    const xl = x.cuda().requiresGrad_(), wl = w.cuda().requiresGrad_(), bl = b.cuda().requiresGrad_();
    const y = kiln.autocast({ dtype: 'bfloat16', deviceType: 'cuda' }, () => linearGelu(xl, wl, bl));
    t.equal(y.dtype, 'bfloat16', 'autocast computes in bfloat16, like linear');
    t.ok(relErr(y.float().cpu(), ref) <= 1e-2, 'autocast values');
    const g = kiln.randn([...ref.shape]);
    y.float().backward(g.cuda());
    const xc = x.clone().requiresGrad_(), wc = w.clone().requiresGrad_(), bc = b.clone().requiresGrad_();
    kiln.linear(xc, wc, bc).gelu('tanh').backward(g);
    for (const [a, c, n] of [[xl, xc, 'x'], [wl, wc, 'weight'], [bl, bc, 'bias']] as Array<[Tensor, Tensor, string]>) {
      t.equal(a.grad!.dtype, 'float32', `${n} gradient float32`);
      t.ok(relErr(a.grad!.cpu(), c.grad!) <= 2e-2, `${n} gradient within bfloat16 precision`);
    }
  }
});

t.test('addLayerNorm on CUDA matches the CPU twin', { skip }, async (t) => {
  kiln.manualSeed(23);
  const both = (x: Tensor, d: Tensor, w: Tensor, b: Tensor) => kiln.stack(addLayerNorm(x, d, w, b));
  for (const dtype of ['float32', 'float64'] as const) {
    // Register rows (M a multiple of the vector width, up to 1024), odd rows (row kernels, a warp
    // per row), rows past 1024 (a block per row).
    for (const shape of [[3, 77, 768], [2, 5, 96], [4, 37, 33], [6, 1536], [1, 5]]) {
      const M = shape[shape.length - 1];
      const inputs = [rn(dtype, ...shape), rn(dtype, ...shape), rn(dtype, M), rn(dtype, M)];
      compare(t, `${dtype} ${JSON.stringify(shape)}`, both, inputs, 1e-5, 1e-5);
    }
    // A non-contiguous x and no affine parameters.
    compare(t, `${dtype} transposed, no affine`, (x, d) => kiln.stack(addLayerNorm(x.transpose(0, 1), d)), [rn(dtype, 96, 7), rn(dtype, 7, 96)], 1e-5, 1e-5);
    // A large mean against the spread stays accurate.
    compare(t, `${dtype} large mean`, both, [rn(dtype, 9, 768).add(1000), rn(dtype, 9, 768), rn(dtype, 768), rn(dtype, 768)], 1e-5, 1e-5);
  }
});

t.test('addLayerNorm in bfloat16 on CUDA agrees with float32 on the CPU within 1e-2', { skip }, async (t) => {
  kiln.manualSeed(24);
  for (const shape of [[3, 77, 768], [2, 5, 96], [4, 37, 33]]) {
    const M = shape[shape.length - 1];
    const x = kiln.randn(shape), d = kiln.randn(shape), w = kiln.randn([M]), b = kiln.randn([M]);
    const bf = (v: Tensor) => v.cuda().to('bfloat16');
    const [s, n] = addLayerNorm(bf(x), bf(d), bf(w), bf(b));
    t.same([s.dtype, n.dtype], ['bfloat16', 'bfloat16'], 'bfloat16 in, bfloat16 out');
    const rs = x.add(d);
    t.ok(relErr(s.float().cpu(), rs) <= 1e-2, `${JSON.stringify(shape)} sum`);
    t.ok(relErr(n.float().cpu(), kiln.layerNorm(rs, M, w, b)) <= 1e-2, `${JSON.stringify(shape)} normed`);
  }
});

t.test('a GPT on CUDA (fused MLP and residual norm) gives the CPU loss and gradients', { skip }, async (t) => {
  kiln.manualSeed(25);
  const cfg: nn.GPTConfig = { vocabSize: 101, blockSize: 32, nLayer: 2, nHead: 4, nEmbd: 96 };
  const cpu = new nn.GPT(cfg), gpu = new nn.GPT(cfg);
  gpu.loadStateDict(cpu.stateDict());
  gpu.to('cuda');
  const idx = kiln.randint(0, 101, [3, 29]), tgt = kiln.randint(0, 101, [3, 29]);
  const lc = cpu.forward(idx, tgt).loss!, lg = gpu.forward(idx.cuda(), tgt.cuda()).loss!;
  t.ok(Math.abs(lc.item() - lg.item()) <= 1e-5 * Math.abs(lc.item()), `loss ${lc.item()} vs ${lg.item()}`);
  lc.backward();
  lg.backward();
  const pg = new Map(gpu.namedParameters());
  for (const [n, p] of cpu.namedParameters()) t.ok(relErr(pg.get(n)!.grad!.cpu(), p.grad!) <= 1e-4, `${n} gradient`);
  // bf16 autocast, as training runs: within bfloat16 precision of the float32 CPU loss.
  const la = kiln.autocast({ dtype: 'bfloat16', deviceType: 'cuda' }, () => gpu.forward(idx.cuda(), tgt.cuda()).loss!);
  t.ok(Math.abs(la.item() - lc.item()) <= 2e-2 * Math.abs(lc.item()), `autocast loss ${la.item()}`);
});
