"""WKV speed: chunked PyTorch form vs the plain per-token loop (RWKV-7 and RWKV-6), fp32 on CPU.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_wkv.py           # T=512, B=1, H=2,8,32
    PYTHONPATH=src python benchmarks/bench_wkv.py --heads 40 --modes fwd+bwd --chunk 32

Prints a markdown table: per model, head count and mode (forward only, or forward+backward of a
loss on the outputs and the final state), the median CPU time (time.process_time: the time this
process actually ran, so other jobs on a shared, busy CPU do not count) of several runs of the loop
and of the chunked form, and the speedup. Inputs are random, with RWKV-like decay ranges.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from bone.models.rwkv.ops import wkv6_chunked, wkv6_recurrent, wkv7_chunked, wkv7_recurrent


def inputs(B: int, T: int, H: int, N: int, grad: bool):
    g = torch.Generator().manual_seed(0)
    rnd = lambda scale=1.0: (torch.randn(B, T, H, N, generator=g) * scale)  # noqa: E731
    r, k, v = rnd(), rnd(0.5), rnd()
    lw7 = -math.exp(-0.5) * torch.sigmoid(rnd(2.0))
    lw6 = -torch.exp(rnd(1.0) - 1.0)
    kk = torch.nn.functional.normalize(rnd(), dim=-1)
    a, b = -kk, kk * torch.rand(B, T, H, N, generator=g)
    u = torch.randn(H, N, generator=g)
    tensors = [r, k, v, lw7, lw6, a, b, u]
    for t in tensors:
        t.requires_grad_(grad)
    return tensors


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def runner(fn, xs, backward: bool):
    def go():
        y, s = fn(*xs)
        if backward:
            (y.square().sum() + s.square().sum()).backward()
    return go


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, nargs="+", default=[2, 8, 32])
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=16, help="chunk_size passed to the chunked forms")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", nargs="+", choices=["fwd", "fwd+bwd"], default=["fwd", "fwd+bwd"])
    args = ap.parse_args()
    print(f"T={args.T} B={args.batch} N={args.head_size} chunk={args.chunk} threads={torch.get_num_threads()}, "
          f"median CPU time of {args.repeats} runs\n")
    print("| model | heads | mode | per-token loop ms | chunked ms | speedup |")
    print("|---|---|---|---|---|---|")
    for H in args.heads:
        for mode in args.modes:
            bwd = mode == "fwd+bwd"
            r, k, v, lw7, lw6, a, b, u = inputs(args.batch, args.T, H, args.head_size, bwd)
            cases = {
                "rwkv7": (wkv7_recurrent, lambda *x: wkv7_chunked(*x, chunk_size=args.chunk), (r, lw7, k, v, a, b)),
                "rwkv6": (wkv6_recurrent, lambda *x: wkv6_chunked(*x, chunk_size=args.chunk), (r, lw6, k, v, u)),
            }
            for name, (loop, chunked, xs) in cases.items():
                t_loop = timed(runner(loop, xs, bwd), args.repeats)
                t_chunk = timed(runner(chunked, xs, bwd), args.repeats)
                print(f"| {name} | {H} | {mode} | {t_loop * 1e3:.1f} | {t_chunk * 1e3:.1f} | {t_loop / t_chunk:.1f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
