#!/usr/bin/env python3
"""The PyTorch side of bench/sdpa: kiln.flashAttention against F.scaled_dot_product_attention.

Reads <work>/sdpa.safetensors and <work>/kiln.json (written by bench/sdpa/kiln.mjs). For each case,
on the GPU (the CPU for a --small check): the exact attention in float64 from the same bfloat16-valued inputs (the reference), and
PyTorch's SDPA in bfloat16 (flash where it applies; an explicit end-aligned mask for L < S, which
PyTorch's is_causal would align to the top left). Reports, for the output and each input gradient,
kiln's and PyTorch's largest error relative to the reference's largest magnitude (kiln passes when
its error is within 2x PyTorch's plus 1e-3), and both sides' median milliseconds of forward +
backward with kiln's speed ratio (PyTorch ms / kiln ms; above 1: kiln is faster). Writes
<work>/sdpa.json and prints a table.

  python3 bench/sdpa/torch_sdpa.py --work DIR [--reps 20]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'gpt2'))
from torch_gpt2 import load_safetensors  # noqa: E402


def end_aligned_mask(L, S, device):
    """True where query i (at position S - L + i) may attend key j."""
    i = torch.arange(L, device=device)[:, None]
    j = torch.arange(S, device=device)[None, :]
    return j <= i + (S - L)


def sdpa(q, k, v, mask=None, is_causal=False):
    """F.scaled_dot_product_attention, or the same math where this PyTorch lacks it (1.13 on a CPU)."""
    if hasattr(F, 'scaled_dot_product_attention'):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    s = q.matmul(k.transpose(-2, -1)) / q.shape[-1] ** 0.5
    if mask is not None:
        s = s.masked_fill(~mask, float('-inf'))
    return s.softmax(-1).matmul(v)


def attention(q, k, v, g, causal, flash):
    """Output and input gradients of softmax(q k^T / sqrt(D)) v for leaves made from q, k, v."""
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    L, S = q.shape[2], k.shape[2]
    if flash and causal and L == S and hasattr(F, 'scaled_dot_product_attention'):
        out = sdpa(q, k, v, is_causal=True)
    else:
        out = sdpa(q, k, v, mask=end_aligned_mask(L, S, q.device) if causal else None)
    out.backward(g)
    return [out, q.grad, k.grad, v.grad]


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--work', required=True)
    p.add_argument('--reps', type=int, default=20)
    a = p.parse_args()
    saved = load_safetensors(os.path.join(a.work, 'sdpa.safetensors'))
    with open(os.path.join(a.work, 'kiln.json')) as f:
        kiln = json.load(f)
    dev = 'cuda' if kiln['device'].startswith('cuda') else 'cpu'
    low = torch.bfloat16 if kiln['dtype'] == 'bfloat16' else torch.float32
    sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
    names = ['out', 'dq', 'dk', 'dv']
    rows = []
    for c in kiln['cases']:
        n = c['name']
        q, k, v, g = (saved[f'{n}.{x}'].to(dev) for x in 'qkvg')
        ref = attention(*(x.double() for x in (q, k, v, g)), c['causal'], flash=False)
        bf = [x.to(low) for x in (q, k, v, g)]
        theirs = attention(*bf, c['causal'], flash=True)
        ours = [saved[f'{n}.{x}'].to(dev) for x in names]
        errors = {}
        for name, r, t, o in zip(names, ref, theirs, ours):
            scale = r.abs().max().item() or 1.0
            errors[name] = {'kiln': (o.double() - r).abs().max().item() / scale, 'torch': (t.double() - r).abs().max().item() / scale}
        times = []
        for _ in range(a.reps + 1):
            sync()
            t0 = time.perf_counter()
            attention(*bf, c['causal'], flash=True)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        torch_ms = statistics.median(times[1:])
        ok = all(e['kiln'] <= 2 * e['torch'] + 1e-3 for e in errors.values())
        rows.append({**c, 'errors': errors, 'pass': ok, 'torch_ms_fwd_bwd': torch_ms, 'kiln_ms_fwd_bwd': c['ms_fwd_bwd'],
                     'speed_ratio': torch_ms / c['ms_fwd_bwd']})
    result = {'device': torch.cuda.get_device_name() if dev == 'cuda' else 'cpu', 'dtype': kiln['dtype'], 'torch': torch.__version__, 'cases': rows, 'pass': all(r['pass'] for r in rows)}
    with open(os.path.join(a.work, 'sdpa.json'), 'w') as f:
        json.dump(result, f, indent=2)
        f.write('\n')
    print('| case | shape B,H,L,S,D | causal | worst error kiln / torch (of out, dq, dk, dv) | kiln ms | torch ms | speed ratio | parity |')
    print('| --- | --- | --- | --- | ---: | ---: | ---: | --- |')
    for r in rows:
        worst = max(r['errors'].values(), key=lambda e: e['kiln'])
        print(f"| {r['name']} | {r['B']},{r['H']},{r['L']},{r['S']},{r['D']} | {r['causal']} | {worst['kiln']:.2e} / {worst['torch']:.2e} | "
              f"{r['kiln_ms_fwd_bwd']:.3f} | {r['torch_ms_fwd_bwd']:.3f} | {r['speed_ratio']:.2f} | {'PASS' if r['pass'] else 'FAIL'} |")
    sys.exit(0 if result['pass'] else 1)


if __name__ == '__main__':
    main()
