"""Flash-Bone col on one CUDA device: time and peak memory of one forward+backward of a single
4096 x 4096 layer at T = 8192 tokens in bf16 (issue 5, item 4), for

  reference   bone.variants col forward under plain autograd (keeps W')
  torch       bone.kernels.ColFn (W' rebuilt in chunks, nothing weight-sized kept)
  triton      bone.kernels.triton_col.TritonColFn (W' formed per tile in registers)
  frozen      F.linear with a frozen weight (the floor)

Usage: python benchmarks/col_gpu.py [--tokens 8192] [--dim 4096] [--r 64] [--repeats 20]
Prints a markdown table; needs a GPU (exits with a message otherwise).
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

from bone import variants
from bone.kernels.blockwise import ColFn
from bone.kernels.triton_col import TritonColFn


def measure(fn, x, w, blk, repeats: int) -> tuple[float, float]:
    """(median ms, peak MiB above the inputs) of y = fn(...); y.backward(dy)."""
    dy = torch.randn(x.shape[0], w.shape[0], device=x.device, dtype=torch.bfloat16)
    for _ in range(3):
        fn(x, w, None, blk).backward(dy)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(x, w, None, blk).backward(dy)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--r", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("col_gpu: no CUDA device; this benchmark needs a GPU", file=sys.stderr)
        return 2
    dev, bf = torch.device("cuda"), torch.bfloat16
    x = torch.randn(args.tokens, args.dim, device=dev, dtype=bf, requires_grad=True)
    w = (torch.randn(args.dim, args.dim, device=dev) * args.dim ** -0.5).to(bf)
    blk = (0.01 * torch.randn(args.dim // args.r, args.r, args.r, device=dev)).to(bf).requires_grad_()
    ref = variants.get("col").forward
    fns = {"frozen": lambda x, w, b, blk: F.linear(x, w, b), "reference": ref,
           "torch": lambda x, w, b, blk: ColFn.apply(x, w, b, blk, 4096),
           "triton": lambda x, w, b, blk: TritonColFn.apply(x, w, b, blk)}
    print(f"T={args.tokens}, {args.dim}x{args.dim}, r={args.r}, bf16, {torch.cuda.get_device_name()}\n")
    print("| path | fwd+bwd (ms, median) | peak extra memory (MiB) |\n|---|---:|---:|")
    for name, fn in fns.items():
        ms, mib = measure(fn, x, w, blk, args.repeats)
        print(f"| {name} | {ms:.2f} | {mib:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
