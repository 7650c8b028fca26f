"""GPU benchmark, PyTorch side: the same measurements as bench/cuda_ops.mjs, timed the same way
(median over samples of `inner` calls between synchronizations). Writes bench/results/cuda-torch.json."""
import json
import os
import time

import torch

dev = "cuda"
results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}


def bench(fn, warmup=5, samples=15, inner=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3 / inner)
    times.sort()
    return times[len(times) // 2]


n = 4096
a = torch.randn(n, n, device=dev)
b = torch.randn(n, n, device=dev)
for tf32 in (False, True):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    with torch.no_grad():
        ms = bench(lambda: a @ b, inner=5)
    results["matmul_tf32_tflops" if tf32 else "matmul_fp32_tflops"] = 2 * n**3 / (ms * 1e-3) / 1e12
torch.backends.cuda.matmul.allow_tf32 = False
del a, b

N, D = 16384, 768
nbytes = 4 * N * D
x = torch.randn(N, D, device=dev, requires_grad=True)
w = torch.ones(D, device=dev, requires_grad=True)
bias = torch.zeros(D, device=dev, requires_grad=True)
gy = torch.randn(N, D, device=dev)


def ln_step():
    y = torch.nn.functional.layer_norm(x, (D,), w, bias)
    y.backward(gy)


def sm_step():
    y = torch.softmax(x, -1)
    y.backward(gy)


results["layernorm_fwd_bwd_gbps"] = 5 * nbytes / (bench(ln_step) * 1e-3) / 1e9
results["softmax_fwd_bwd_gbps"] = 5 * nbytes / (bench(sm_step) * 1e-3) / 1e9

a = torch.randn(1024, device=dev)
b = torch.randn(1024, device=dev)
for _ in range(2000):
    a + b
torch.cuda.synchronize()
count = 20000
t0 = time.perf_counter()
for _ in range(count):
    a + b
torch.cuda.synchronize()
results["small_op_overhead_us"] = (time.perf_counter() - t0) * 1e6 / count

here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(os.path.join(here, "results"), exist_ok=True)
with open(os.path.join(here, "results", "cuda-torch.json"), "w") as f:
    json.dump(results, f, indent=2)
print(json.dumps(results))
