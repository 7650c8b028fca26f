#!/bin/bash
# Runs the GPU benchmark for kiln and PyTorch on the same GPU in one session and prints the ratios
# (kiln / PyTorch; for overhead, lower is better). Writes bench/results/cuda.json (and to $OUT when set).
set -euo pipefail
cd "$(dirname "$0")"
node cuda_ops.mjs >/dev/null
python3 cuda_ops_torch.py >/dev/null
node -e '
const k = require("./results/cuda-kiln.json"), t = require("./results/cuda-torch.json");
const rows = [
  ["matmul fp32 4096 (TFLOP/s)", "matmul_fp32_tflops", 1],
  ["matmul tf32 4096 (TFLOP/s)", "matmul_tf32_tflops", 1],
  ["layerNorm fwd+bwd 16384x768 (GB/s)", "layernorm_fwd_bwd_gbps", 1],
  ["softmax fwd+bwd 16384x768 (GB/s)", "softmax_fwd_bwd_gbps", 1],
  ["small op overhead (us/op, lower is better)", "small_op_overhead_us", -1],
];
const out = { device: k.device, torch: t.torch, rows: {} };
console.log(`${k.device}, PyTorch ${t.torch}`);
console.log("measure".padEnd(46) + "kiln".padStart(10) + "torch".padStart(10) + "  ratio");
for (const [label, key, dir] of rows) {
  const ratio = dir > 0 ? k[key] / t[key] : t[key] / k[key];
  out.rows[key] = { kiln: k[key], torch: t[key], ratio };
  console.log(label.padEnd(46) + k[key].toFixed(2).padStart(10) + t[key].toFixed(2).padStart(10) + "  " + ratio.toFixed(3));
}
require("fs").writeFileSync("results/cuda.json", JSON.stringify(out, null, 2));
if (process.env.OUT) require("fs").writeFileSync(process.env.OUT + "/cuda-bench.json", JSON.stringify(out, null, 2));
'
