#!/usr/bin/env python3
"""Recurrent layers in PyTorch on the CPU: the PyTorch half of bench/rnn.mjs.

nn.LSTM and nn.GRU with the shapes of bench/rnn.mjs (default: 2 layers, input 128, hidden 128,
batch 32, sequence 48, float32, [seq, batch, feature] input, 1 thread). Two passes: the forward
under torch.no_grad(), and forward + backward (output.backward(gy) with a fixed random gy,
parameter gradients set to None after each call).

With --serve (how bench/rnn.mjs runs it), it prints one JSON line describing itself, then answers
each line `LAYER PASS CALLS` read from stdin with the milliseconds per call of CALLS calls, so that
bench/rnn.mjs can alternate kiln's samples and PyTorch's one by one. Without it, it times each layer
and pass itself (--warmup calls, then --reps samples of --inner calls; median and best, ms per call)
and prints one JSON object.

  python3 bench/rnn_torch.py [--serve] [--threads 1] [--reps 21] [--inner 3] [--warmup 3]
                             [--layers 2] [--input 128] [--hidden 128] [--batch 32] [--seq 48]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch


def timed(fn, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--serve', action='store_true', help='answer `LAYER PASS CALLS` lines on stdin (for bench/rnn.mjs)')
    for name, default in dict(threads=1, reps=21, inner=3, warmup=3, layers=2, input=128, hidden=128, batch=32, seq=48).items():
        p.add_argument(f'--{name}', type=int, default=default)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.randn(a.seq, a.batch, a.input)
    gy = torch.randn(a.seq, a.batch, a.hidden)
    passes = {}
    for name, cls in (('LSTM', torch.nn.LSTM), ('GRU', torch.nn.GRU)):
        m = cls(a.input, a.hidden, num_layers=a.layers)

        def forward(m=m):
            with torch.no_grad():
                m(x)

        def forward_backward(m=m):
            out, _ = m(x)
            out.backward(gy)
            m.zero_grad(set_to_none=True)

        passes[name] = {'forward': forward, 'forward_backward': forward_backward}
    info = {
        'framework': 'pytorch',
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'mkldnn': torch.backends.mkldnn.is_available(),
        'machine': {'cpu': platform.processor() or platform.machine(), 'cpus': os.cpu_count(), 'python': platform.python_version()},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    if a.serve:
        print(json.dumps(info), flush=True)
        for line in sys.stdin:
            layer, pass_, calls = line.split()
            print(f'{timed(passes[layer][pass_], int(calls)):.6f}', flush=True)
        return
    results = {}
    for layer, ps in passes.items():
        results[layer] = {}
        for pass_, fn in ps.items():
            timed(fn, a.warmup)
            samples = [timed(fn, a.inner) for _ in range(a.reps)]
            results[layer][pass_] = {'ms_median': statistics.median(samples), 'ms_best': min(samples), 'samples_ms': samples}
    print(json.dumps({**info, 'results': results}))


if __name__ == '__main__':
    main()
