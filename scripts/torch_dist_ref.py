#!/usr/bin/env python3
"""PyTorch reference for kiln's data-parallel tests and benchmarks (issue #10).

Started by kiln's Node tests and benchmarks as W processes with torchrun's environment (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT); torch.distributed over Gloo on the CPU. Without WORLD_SIZE
(or with WORLD_SIZE=1) it runs alone: parity without DistributedDataParallel, the benchmarks in a
world of one. Safetensors files are read and written by hand (F32/F64 only), since the
`safetensors` package may be absent. Every result is one JSON line on stdout.

  make-parity-inputs --layers 8,16,4 --steps N --batch B --seed S --weights W.safetensors
                     --data D.safetensors [--dtype float32|float64]
      Writes an MLP's parameters (layers.{i}.weight [out, in], layers.{i}.bias [out], drawn as
      torch.nn.Linear initializes them) and data x [N, B, in], y [N, B, out] (standard normal).
      Prints {"weights": W, "data": D}.

  parity --weights W --data D --steps N --lr LR --optimizer adamw|sgd --out O.safetensors
         [--dtype float32|float64] [--accumulate K]
      Trains that MLP (tanh between layers, mean-squared-error loss) from W's exact values, under
      DistributedDataParallel when WORLD_SIZE > 1. Step s on rank r uses rows
      [r*B/W, (r+1)*B/W) of x[s], y[s]; with --accumulate K those rows are K micro-batches whose
      losses/K are backpropagated under no_sync() but for the last. AdamW: betas (0.9, 0.999),
      eps 1e-8, weight_decay 0.01; SGD: momentum 0.9. Computes in --dtype (default: W's dtype);
      rank 0 writes the final parameters to O in that dtype. Each rank prints
      {"rank": r, "losses": [local loss of each step]}.

  allreduce-bench [--sizes 4096,65536,...] [--iters I] [--warmup 3]
      all_reduce(sum) of float32 tensors of each size in BYTES, each call timed on its own after
      a barrier. Rank 0 prints per size {"bytes", "seconds_per_op" (median), "algbw_GBps"
      (bytes / seconds / 1e9), "busbw_GBps" (algbw * 2(W-1)/W)}.

  ddp-bench --width H --depth L --batch B --in-dim D --out-dim O --steps S --warmup K
            --bucket-cap-mb C
      An MLP of L Linear layers (D -> H, H -> H, ..., H -> O, tanh between), float32, weights
      seeded 0, random data, B rows per process per step. Mean step time (forward, backward, SGD
      step, zero_grad) (a) under DDP with bucket_cap_mb=C, (b) without DDP in every process at
      once (the compute alone), (c) all_reduce alone of a flat buffer the size of all gradients;
      each the slowest rank's mean. Rank 0 prints {"world", "step_ddp_s", "step_local_s",
      "comm_alone_s", "scaling_efficiency" (local / ddp), "overlap_fraction"
      (clamp((local + comm - ddp) / comm, 0, 1))}.

Common options: --threads N (torch threads per process, default 1: processes share the cores),
--timeout SECONDS (process-group timeout, default 300).
"""
import argparse
import contextlib
import datetime
import gc
import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

SAFETENSORS_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}  # the format is little-endian
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def fail(message):
    raise SystemExit(f"torch_dist_ref: {message}")


def read_safetensors(path):
    """Returns {name: numpy array} from a safetensors file holding F32/F64 tensors."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail(f"{path}: too short for a safetensors file ({len(blob)} bytes)")
    (header_len,) = struct.unpack("<Q", blob[:8])
    if 8 + header_len > len(blob):
        fail(f"{path}: header length {header_len} runs past the end of the file ({len(blob)} bytes)")
    header = json.loads(blob[8 : 8 + header_len])
    data = memoryview(blob)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            fail(f"{path}: tensor {name} has dtype {info['dtype']}; only F32 and F64 are read")
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or end > len(data):
            fail(f"{path}: tensor {name} of shape {list(shape)} {info['dtype']} has data_offsets [{begin}, {end}]")
        tensors[name] = np.frombuffer(data[begin:end], dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))  # a native, writable copy
    return tensors


def write_safetensors(path, tensors):
    """Writes {name: torch tensor or numpy array} (float32/float64) as safetensors, names sorted."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name]
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        code = {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}.get(a.dtype)
        if code is None:
            fail(f"{path}: cannot write tensor {name} of dtype {a.dtype}; only float32 and float64")
        raw = np.ascontiguousarray(a, dtype=SAFETENSORS_DTYPES[code]).tobytes()
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header with spaces to keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in chunks:
            f.write(raw)


class MLP(nn.Module):
    """Linear layers named layers.{i} (the parameter names of the safetensors files), tanh between."""

    def __init__(self, sizes, dtype=torch.float32):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b, dtype=dtype) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
        return x


def mlp_sizes(weights, path):
    """The layer widths [in, h1, ..., out] that a weights file describes, checking its names and shapes."""
    n = 0
    while f"layers.{n}.weight" in weights:
        n += 1
    expected = {f"layers.{i}.{p}" for i in range(n) for p in ("weight", "bias")}
    if n == 0 or set(weights) != expected:
        fail(f"{path}: expected exactly layers.{{i}}.weight and layers.{{i}}.bias for i = 0..L-1; found {sorted(weights)}")
    sizes = []
    for i in range(n):
        w, b = weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"]
        if w.ndim != 2 or (sizes and w.shape[1] != sizes[-1]) or b.shape != w.shape[:1]:
            fail(f"{path}: layer {i} has weight {list(w.shape)} and bias {list(b.shape)}; expected weight [out, {sizes[-1] if sizes else 'in'}] and bias [out]")
        sizes = sizes or [w.shape[1]]
        sizes.append(w.shape[0])
    return sizes


def world():
    """(rank, world size) from torchrun's environment; alone when WORLD_SIZE is unset."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_group(rank, size, timeout):
    """Joins the Gloo group: the environment's rendezvous, or an in-process store for a world of one."""
    timeout = datetime.timedelta(seconds=timeout)
    if size > 1:
        dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=size, timeout=timeout)
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)


def leave_group():
    """Destroys the process group once every DDP wrapper is gone (the callers' wrappers die with their frames).

    ~ProcessGroupGloo joins its worker threads, and a worker dropping the last reference to a
    collective's tensor takes the GIL to free it. Destroyed through its Python binding the group
    releases the GIL first; destroyed by a dying DDP Reducer (its last owner once
    destroy_process_group dropped the registry's) it runs under the GIL and deadlocks, as seen with
    torch 1.13 (pytorch/pytorch#56297). gc.collect() frees wrappers caught in reference cycles.
    """
    gc.collect()
    dist.destroy_process_group()


def emit(record):
    print(json.dumps(record), flush=True)


def cmd_make_parity_inputs(args):
    sizes = [int(s) for s in args.layers.split(",")]
    if len(sizes) < 2 or min(sizes) < 1:
        fail(f"make-parity-inputs: --layers needs at least two positive widths; got {args.layers}")
    dtype = TORCH_DTYPES[args.dtype]
    torch.manual_seed(args.seed)
    model = MLP(sizes, dtype=dtype)
    write_safetensors(args.weights, model.state_dict())
    x = torch.randn(args.steps, args.batch, sizes[0], dtype=dtype)
    y = torch.randn(args.steps, args.batch, sizes[-1], dtype=dtype)
    write_safetensors(args.data, {"x": x, "y": y})
    emit({"weights": args.weights, "data": args.data})


def cmd_parity(args):
    rank, size = world()
    weights = read_safetensors(args.weights)
    sizes = mlp_sizes(weights, args.weights)
    data = read_safetensors(args.data)
    if set(data) != {"x", "y"}:
        fail(f"parity: {args.data} must hold exactly x and y; found {sorted(data)}")
    x, y = data["x"], data["y"]
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2] or x.shape[2] != sizes[0] or y.shape[2] != sizes[-1]:
        fail(f"parity: x {list(x.shape)} and y {list(y.shape)} must be [N, B, {sizes[0]}] and [N, B, {sizes[-1]}] for the MLP {sizes}")
    steps, batch = x.shape[0], x.shape[1]
    if args.steps > steps:
        fail(f"parity: --steps {args.steps} but {args.data} holds {steps} steps")
    if batch % size:
        fail(f"parity: batch {batch} is not divisible by the world size {size}")
    local = batch // size
    if args.accumulate < 1 or local % args.accumulate:
        fail(f"parity: the per-rank batch {local} (batch {batch} / world {size}) is not divisible by --accumulate {args.accumulate}")
    dtype = TORCH_DTYPES[args.dtype] if args.dtype else torch.from_numpy(weights["layers.0.weight"]).dtype

    model = MLP(sizes, dtype=dtype)
    with torch.no_grad():  # W's exact values replace Linear's random initialization
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(weights[name]))
    if size > 1:
        init_group(rank, size, args.timeout)
    losses = train_parity(model, x, y, rank, size, args)
    if rank == 0:
        write_safetensors(args.out, dict(model.named_parameters()))
    if size > 1:
        dist.barrier()  # once any rank has reported, rank 0's file is complete
    emit({"rank": rank, "losses": losses})
    if size > 1:
        leave_group()


def train_parity(model, x, y, rank, size, args):
    """The parity run's training loop; returns this rank's loss at each step. Its DDP wrapper dies on return."""
    dtype = next(model.parameters()).dtype
    net = nn.parallel.DistributedDataParallel(model) if size > 1 else model
    if args.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    local = x.shape[1] // size
    micro = local // args.accumulate
    losses = []
    for s in range(args.steps):
        xs = torch.from_numpy(x[s, rank * local : (rank + 1) * local]).to(dtype)
        ys = torch.from_numpy(y[s, rank * local : (rank + 1) * local]).to(dtype)
        opt.zero_grad()
        total = 0.0
        for k in range(args.accumulate):
            # Only the last micro-batch's backward all-reduces: the others just accumulate locally.
            sync = size == 1 or k == args.accumulate - 1
            with contextlib.nullcontext() if sync else net.no_sync():
                loss = F.mse_loss(net(xs[k * micro : (k + 1) * micro]), ys[k * micro : (k + 1) * micro]) / args.accumulate
                loss.backward()
            total += loss.item()
        opt.step()
        losses.append(total)
    return losses


def timed_max(seconds):
    """The slowest rank's figure: a data-parallel step is as slow as its slowest process."""
    t = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def cmd_allreduce_bench(args):
    rank, size = world()
    sizes = [int(s) for s in args.sizes.split(",")]
    for b in sizes:
        if b < 4 or b % 4:
            fail(f"allreduce-bench: size {b} bytes is not a positive multiple of 4 (float32)")
    if args.iters < 1:
        fail(f"allreduce-bench: --iters must be at least 1; got {args.iters}")
    init_group(rank, size, args.timeout)
    for b in sizes:
        t = torch.zeros(b // 4, dtype=torch.float32)  # zeros stay zeros: no overflow over many sums
        for _ in range(args.warmup):
            dist.all_reduce(t)
        times = []
        for _ in range(args.iters):
            dist.barrier()  # every call starts with all ranks present, so it times the exchange, not the wait
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - t0)
        seconds = timed_max(statistics.median(times))
        algbw = b / seconds / 1e9
        if rank == 0:
            emit({"bytes": b, "seconds_per_op": seconds, "algbw_GBps": algbw, "busbw_GBps": algbw * 2 * (size - 1) / size})
    leave_group()


def cmd_ddp_bench(args):
    rank, size = world()
    if args.depth < 1 or min(args.width, args.batch, args.in_dim, args.out_dim) < 1:
        fail("ddp-bench: --depth, --width, --batch, --in-dim and --out-dim must be positive")
    if args.steps < 1:
        fail(f"ddp-bench: --steps must be at least 1; got {args.steps}")
    init_group(rank, size, args.timeout)
    sizes = [args.in_dim] + [args.width] * (args.depth - 1) + [args.out_dim]
    torch.manual_seed(rank + 1)  # each rank its own data, as in data-parallel training
    xs = torch.randn(args.batch, args.in_dim)
    ys = torch.randn(args.batch, args.out_dim)

    def mean_step(net, params):
        opt = torch.optim.SGD(params, lr=1e-3)

        def step():
            F.mse_loss(net(xs), ys).backward()
            opt.step()
            opt.zero_grad()

        for _ in range(args.warmup):
            step()
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        return timed_max((time.perf_counter() - t0) / args.steps)

    torch.manual_seed(0)
    model = MLP(sizes)
    # (b) first, every process at once, so compute alone meets the same contention for cores as under DDP.
    step_local = mean_step(model, model.parameters())
    torch.manual_seed(0)
    model = MLP(sizes)
    step_ddp = mean_step(nn.parallel.DistributedDataParallel(model, bucket_cap_mb=args.bucket_cap_mb), model.parameters())

    flat = torch.zeros(sum(p.numel() for p in model.parameters()))
    for _ in range(args.warmup):
        dist.all_reduce(flat)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        dist.all_reduce(flat)
    comm = timed_max((time.perf_counter() - t0) / args.steps)

    if rank == 0:
        emit(
            {
                "world": size,
                "step_ddp_s": step_ddp,
                "step_local_s": step_local,
                "comm_alone_s": comm,
                "scaling_efficiency": step_local / step_ddp,
                "overlap_fraction": min(1.0, max(0.0, (step_local + comm - step_ddp) / comm)),
            }
        )
    leave_group()


def main():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    common.add_argument("--timeout", type=float, default=300, help="process-group timeout in seconds")
    parser = argparse.ArgumentParser(description="PyTorch reference for kiln's data-parallel tests and benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-parity-inputs", parents=[common], help="write an MLP's weights and data")
    p.add_argument("--layers", required=True, help="widths, comma-separated: in,hidden...,out")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--dtype", choices=TORCH_DTYPES, default="float32")
    p.set_defaults(run=cmd_make_parity_inputs)

    p = sub.add_parser("parity", parents=[common], help="train the MLP from given weights and data")
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=TORCH_DTYPES, help="compute and output dtype (default: the weights')")
    p.add_argument("--accumulate", type=int, default=1, help="micro-batches per step")
    p.set_defaults(run=cmd_parity)

    p = sub.add_parser("allreduce-bench", parents=[common], help="time all_reduce per message size")
    p.add_argument("--sizes", default="4096,65536,1048576,16777216,67108864", help="bytes, comma-separated")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.set_defaults(run=cmd_allreduce_bench)

    p = sub.add_parser("ddp-bench", parents=[common], help="time DDP steps against compute and communication alone")
    p.add_argument("--width", type=int, required=True)
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--batch", type=int, required=True, help="rows per process per step")
    p.add_argument("--in-dim", type=int, required=True)
    p.add_argument("--out-dim", type=int, required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--bucket-cap-mb", type=float, default=25)
    p.set_defaults(run=cmd_ddp_bench)

    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
