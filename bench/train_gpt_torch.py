#!/usr/bin/env python3
"""GPT training throughput of PyTorch on the CPU: the PyTorch half of bench/train_gpt.mjs.

The same model as kiln's nn.GPT: GPT-2's layout (token + learned position embeddings, pre-norm
blocks of causal self-attention with a packed q/k/v projection and a 4x tanh-GELU MLP, final
LayerNorm, output head tied to the token embedding) and GPT-2's initialization; 4 layers, 256 wide,
4 heads, context 128, vocabulary 50257, batch 16, AdamW (lr 3e-4, weight decay 0.1 on every
parameter, as kiln's benchmark does). A step is forward, loss, backward, optimizer step and zeroing
the gradients on random tokens; tokens/s uses the median step time after warm-up.
Writes bench/results/train_gpt_torch.json.

  python3 bench/train_gpt_torch.py [--threads 2] [--steps 10] [--warmup 3] [--attention sdpa|naive]
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, embd, heads, naive):
        super().__init__()
        self.heads, self.naive = heads, naive
        self.ln1 = nn.LayerNorm(embd)
        self.qkv = nn.Linear(embd, 3 * embd)
        self.out = nn.Linear(embd, embd)
        self.ln2 = nn.LayerNorm(embd)
        self.fc = nn.Linear(embd, 4 * embd)
        self.proj = nn.Linear(4 * embd, embd)

    def attention(self, x):
        b, t, e = x.shape
        q, k, v = (z.view(b, t, self.heads, e // self.heads).transpose(1, 2) for z in self.qkv(x).split(e, dim=2))
        if self.naive:
            # What kiln computes: scores, causal mask, softmax, weighted values.
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(e // self.heads)
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            y = scores.masked_fill(mask, float('-inf')).softmax(-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, e))

    def forward(self, x):
        x = x + self.attention(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate='tanh'))


class GPT(nn.Module):
    def __init__(self, vocab, block, layers, embd, heads, naive):
        super().__init__()
        self.wte = nn.Embedding(vocab, embd)
        self.wpe = nn.Embedding(block, embd)
        self.blocks = nn.ModuleList(Block(embd, heads, naive) for _ in range(layers))
        self.ln_f = nn.LayerNorm(embd)
        self.head = nn.Linear(embd, vocab, bias=False)
        self.head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if getattr(m, 'bias', None) is not None:
                    nn.init.zeros_(m.bias)
        for b in self.blocks:
            nn.init.normal_(b.out.weight, 0.0, 0.02 / math.sqrt(2 * layers))
            nn.init.normal_(b.proj.weight, 0.0, 0.02 / math.sqrt(2 * layers))

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe.weight[:t]
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    for name, default in dict(threads=2, steps=10, warmup=3, batch=16, block=128, layers=4, embd=256, heads=4, vocab=50257).items():
        p.add_argument(f'--{name}', type=int, default=default)
    p.add_argument('--attention', choices=['sdpa', 'naive'], default='sdpa', help='F.scaled_dot_product_attention, or explicit matmul/softmax like kiln')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT(a.vocab, a.block, a.layers, a.embd, a.heads, a.attention == 'naive')
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    x = torch.randint(0, a.vocab, (a.batch, a.block))
    y = torch.randint(0, a.vocab, (a.batch, a.block))

    def step():
        loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    losses = [step() for _ in range(a.warmup)]
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - t0)
    median, best = statistics.median(times), min(times)
    tokens = a.batch * a.block
    params = sum(q.numel() for q in model.parameters())
    result = {
        'framework': 'pytorch',
        'model': {'vocab': a.vocab, 'block': a.block, 'layers': a.layers, 'embd': a.embd, 'heads': a.heads, 'parameters': params},
        'attention': a.attention,
        'batch': a.batch,
        'threads': torch.get_num_threads(),
        'warmup_steps': a.warmup,
        'timed_steps': a.steps,
        'tokens_per_step': tokens,
        'tokens_per_s': tokens / median,
        'tokens_per_s_best': tokens / best,
        'ms_per_step_median': median * 1e3,
        'ms_per_step_best': best * 1e3,
        'first_loss': losses[0],
        'last_loss': losses[-1],
        'machine': {'cpu': platform.processor() or platform.machine(), 'cpus': os.cpu_count(), 'torch': torch.__version__,
                    'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY')},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    print(f"pytorch {torch.__version__}: GPT {a.layers}x{a.embd} ({params / 1e6:.1f}M parameters), batch {a.batch} x {a.block} tokens, "
          f"{result['threads']} threads, {a.attention} attention: {result['tokens_per_s']:.0f} tokens/s (median of {a.steps} steps, "
          f"{result['ms_per_step_median']:.0f} ms/step; best {result['tokens_per_s_best']:.0f}); loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'train_gpt_torch.json')
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(result, f, indent=2)
        f.write('\n')
    print(f'wrote {os.path.relpath(out)}')


if __name__ == '__main__':
    main()
