#!/usr/bin/env python3
"""The PyTorch side of bench/gpt2: eager or torch.compile, from kiln's initial weights and batches.

Loads <work>/init.safetensors (written by bench/gpt2/kiln.mjs: kiln's parameter names, float32
weights, int64 batches) into bench/train_gpt_torch.py's GPT (the same layout as kiln's nn.GPT),
then trains exactly as kiln.mjs does: bfloat16 autocast, AdamW (lr 3e-4, betas 0.9/0.999, eps 1e-8,
weight decay 0.1 on every parameter; fused on CUDA), --check steps on the stored batches, --warmup
more, then --steps timed steps, each ending with loss.item(). Attention is
F.scaled_dot_product_attention (flash on CUDA), or explicit matmul/softmax on a PyTorch without it
(1.13). With --compile the model goes through torch.compile; the first step (which compiles) is
reported as compile_s and is never a timed step. On CUDA, --profile N then runs N more steps under
torch.profiler and records GPU ms per step by kernel family (the families kiln.cuda.profileKernels
reports, told apart by kernel name; Triton's fused kernels are their own family) and the top kernels.
Writes <work>/torch_eager.json or torch_compile.json.

  python3 bench/gpt2/torch_gpt2.py --work DIR [--device cuda] [--compile] [--steps 20] ...
"""
import argparse
import datetime
import json
import os
import re
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
from train_gpt_torch import GPT  # noqa: E402

ST_DTYPES = {'F32': torch.float32, 'I64': torch.int64, 'BF16': torch.bfloat16, 'F16': torch.float16}


def load_safetensors(path):
    """name -> tensor from a safetensors file (the format is 8 bytes of header length, JSON, data)."""
    with open(path, 'rb') as f:
        raw = f.read()
    (n,) = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + n])
    data = bytearray(raw[8 + n:])
    out = {}
    for name, e in header.items():
        if name == '__metadata__':
            continue
        b, end = e['data_offsets']
        dtype = ST_DTYPES[e['dtype']]
        out[name] = torch.frombuffer(data, dtype=dtype, count=(end - b) // torch.empty(0, dtype=dtype).element_size(), offset=b).reshape(e['shape']).clone()
    return out


def torch_name(kiln_name):
    """kiln's nn.GPT parameter name -> train_gpt_torch.GPT's."""
    name = kiln_name.replace('attn.inProjWeight', 'qkv.weight').replace('attn.inProjBias', 'qkv.bias').replace('attn.outProj', 'out')
    name = name.replace('mlp.fc', 'fc').replace('mlp.proj', 'proj').replace('lnF', 'ln_f')
    return name


# Kernel name patterns -> the families kiln's profile uses; first match wins.
FAMILIES = [
    ('fused (triton)', r'^triton_'),
    ('attention', r'flash|fmha|attention|sdpa|cudnn'),
    ('matmul', r'gemm|cutlass|xmma|nvjet|cublas|sm90_|sm80_|ampere_|splitk'),
    ('norm', r'layer_norm|layernorm'),
    ('softmax/loss', r'softmax|cross_entropy|nll_loss'),
    ('optim', r'adam|multi_tensor|foreach'),
    ('index', r'embedding|index|gather|scatter'),
    ('reduce', r'reduce'),
    ('copy', r'copy|memcpy|memset|cast|convert'),
    ('elementwise', r'elementwise|vectorized|unrolled|gelu|fill'),
]


def family_of(name):
    for family, pattern in FAMILIES:
        if re.search(pattern, name, re.IGNORECASE):
            return family
    return 'other'


def kernel_profile(step, n):
    """GPU ms per step by family and the top kernels, over n steps under torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(n):
            step(i, read=False)
        torch.cuda.synchronize()
    kernels = {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        k = kernels.setdefault(e.name, [0.0, 0])
        k[0] += e.time_range.elapsed_us() / 1e3
        k[1] += 1
    families = {}
    for name, (ms, _) in kernels.items():
        f = family_of(name)
        families[f] = families.get(f, 0.0) + ms / n
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:15]
    return {
        'steps': n,
        'gpu_ms_per_step': sum(ms for ms, _ in kernels.values()) / n,
        'families_ms_per_step': dict(sorted(families.items(), key=lambda kv: -kv[1])),
        'top_kernels': [{'name': name[:120], 'family': family_of(name), 'ms_per_step': ms / n, 'calls_per_step': c / n} for name, (ms, c) in top],
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    for name, default in dict(steps=20, warmup=3, check=20, batch=16, block=1024, layers=12, embd=768, heads=12, vocab=50304, threads=0, profile=0).items():
        p.add_argument(f'--{name}', type=int, default=default)
    p.add_argument('--device', default='cpu')
    p.add_argument('--compile', action='store_true')
    p.add_argument('--work', required=True)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = a.device.startswith('cuda')
    sdpa = hasattr(F, 'scaled_dot_product_attention')
    model = GPT(a.vocab, a.block, a.layers, a.embd, a.heads, naive=not sdpa)
    state = load_safetensors(os.path.join(a.work, 'init.safetensors'))
    params = dict(model.named_parameters())
    loaded = set()
    for k, v in state.items():
        if k.startswith('batch.'):
            continue
        t = torch_name(k)
        if t not in params or params[t].shape != v.shape:
            raise SystemExit(f'torch_gpt2: kiln parameter {k} ({list(v.shape)}) has no match {t} in the PyTorch model')
        with torch.no_grad():
            params[t].copy_(v)
        loaded.add(t)
    missing = set(params) - loaded
    if missing:
        raise SystemExit(f'torch_gpt2: not in init.safetensors: {sorted(missing)}')
    model.to(a.device)
    batches = [(state[f'batch.{i}.x'].to(a.device), state[f'batch.{i}.y'].to(a.device)) for i in range(a.check)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, **({'fused': True} if cuda else {}))
    run = torch.compile(model) if a.compile else model
    device_type = 'cuda' if cuda else 'cpu'

    def step(i, read=True):
        x, y = batches[i % len(batches)]
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            loss = run(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item() if read else None

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = []
    for i in range(a.check + a.warmup):
        losses.append(step(i))
        if i == 0:
            first_step_s = time.perf_counter() - start
        # One line per untimed step: a run cut short by its timeout still shows how far it got.
        print(f'torch step {i}: loss {losses[i]:.4f}, {time.perf_counter() - start:.1f} s', flush=True)
    times = []
    for i in range(a.steps):
        t0 = time.perf_counter()
        losses.append(step(i))
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    peak_memory = torch.cuda.max_memory_allocated() if cuda else None
    reserved_memory = torch.cuda.max_memory_reserved() if cuda else None
    profiled = None
    if cuda and a.profile > 0:
        try:
            profiled = kernel_profile(step, a.profile)
        except Exception as e:  # the timings above still count
            profiled = {'error': f'{type(e).__name__}: {e}'}
    label = 'compile' if a.compile else 'eager'
    result = {
        'framework': 'pytorch',
        'variant': f'PyTorch {label} bf16 autocast, ' + ('SDPA' if sdpa else 'matmul/softmax attention (no SDPA in this PyTorch)'),
        'device': torch.cuda.get_device_name() if cuda else f'cpu ({torch.get_num_threads()} threads)',
        'model': {'vocab': a.vocab, 'block': a.block, 'layers': a.layers, 'embd': a.embd, 'heads': a.heads,
                  'parameters': sum(q.numel() for q in model.parameters())},
        'batch': a.batch,
        'tokens_per_step': a.batch * a.block,
        'timed_steps': a.steps,
        'ms_per_step': statistics.median(times),
        'ms_per_step_best': min(times),
        'compile_s': first_step_s if a.compile else None,
        'check_losses': losses[:a.check],
        'last_loss': losses[-1],
        'peak_memory_bytes': peak_memory,
        'reserved_memory_bytes': reserved_memory,
        'profile': profiled,
        'versions': {'torch': torch.__version__, 'cuda': torch.version.cuda, 'python': sys.version.split()[0]},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    with open(os.path.join(a.work, f'torch_{label}.json'), 'w') as f:
        json.dump(result, f, indent=2)
        f.write('\n')
    extra = f', first step (compiling) {first_step_s:.1f} s' if a.compile else ''
    print(f"torch {label}: {result['ms_per_step']:.1f} ms/step (median of {a.steps}){extra}, loss {losses[0]:.4f} -> {losses[-1]:.4f}")


if __name__ == '__main__':
    main()
