// GPU benchmark, kiln side: float32/TF32 matmul TFLOP/s at 4096, layerNorm and softmax
// forward+backward GB/s at (16384, 768), and the per-op overhead of a small elementwise op issued
// from JavaScript. Writes bench/results/cuda-kiln.json. Run through bench/cuda_ops.sh, which runs
// the PyTorch side (bench/cuda_ops_torch.py) in the same session and prints the ratios.
import * as fs from 'fs';
import * as path from 'path';
import { fileURLToPath } from 'url';
import * as kiln from '../dist/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
if (!kiln.cuda.isAvailable()) {
  console.error('bench/cuda_ops: no CUDA device (or kiln built without CUDA)');
  process.exit(1);
}
const dev = 'cuda';

// Median milliseconds per call of fn over `iters` calls, after `warmup` calls; each sample times
// `inner` calls between two synchronizations.
function bench(fn, { warmup = 5, samples = 15, inner = 10 } = {}) {
  for (let i = 0; i < warmup; i++) fn();
  kiln.cuda.synchronize();
  const times = [];
  for (let s = 0; s < samples; s++) {
    const t0 = performance.now();
    for (let i = 0; i < inner; i++) fn();
    kiln.cuda.synchronize();
    times.push((performance.now() - t0) / inner);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

const results = { device: kiln.cuda.getDeviceName(0) };

// Matmul at 4096 (float32 without and with TF32).
{
  const n = 4096;
  const a = kiln.randn([n, n], { device: dev }), b = kiln.randn([n, n], { device: dev });
  for (const tf32 of [false, true]) {
    kiln.cuda.setAllowTF32(tf32);
    const ms = bench(() => kiln.noGrad(() => a.matmul(b).dispose()), { inner: 5 });
    results[tf32 ? 'matmul_tf32_tflops' : 'matmul_fp32_tflops'] = (2 * n ** 3) / (ms * 1e-3) / 1e12;
  }
  kiln.cuda.setAllowTF32(false);
  kiln.dispose([a, b]);
}

// Row ops at (16384, 768): forward+backward through autograd, bytes counted as x and y once each
// forward, and gy, the saved tensors and gx once each backward (same formula on both sides).
{
  const [N, D] = [16384, 768];
  const bytes = 4 * N * D;
  const x = kiln.randn([N, D], { device: dev }).requiresGrad_();
  const w = kiln.ones([D], { device: dev }).requiresGrad_();
  const bias = kiln.zeros([D], { device: dev }).requiresGrad_();
  const gy = kiln.randn([N, D], { device: dev });
  const ln = bench(() => {
    const y = x.layerNorm(D, w, bias);
    y.backward(gy);
    y.dispose();
  });
  results.layernorm_fwd_bwd_gbps = (5 * bytes) / (ln * 1e-3) / 1e9;
  const sm = bench(() => {
    const y = x.softmax(-1);
    y.backward(gy);
    y.dispose();
  });
  results.softmax_fwd_bwd_gbps = (5 * bytes) / (sm * 1e-3) / 1e9;
  kiln.dispose([x, w, bias, gy, x.grad, w.grad, bias.grad]);
}

// Per-op overhead: a 1024-element add issued in a loop (host time per op, the GPU keeps up).
{
  const a = kiln.randn([1024], { device: dev }), b = kiln.randn([1024], { device: dev });
  const n = 20000;
  for (let i = 0; i < 2000; i++) a.add(b).dispose();
  kiln.cuda.synchronize();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) a.add(b).dispose();
  kiln.cuda.synchronize();
  results.small_op_overhead_us = ((performance.now() - t0) * 1e3) / n;
}

fs.mkdirSync(path.join(here, 'results'), { recursive: true });
fs.writeFileSync(path.join(here, 'results', 'cuda-kiln.json'), JSON.stringify(results, null, 2));
console.log(JSON.stringify(results));
