"""WKV speed: chunked PyTorch form vs the plain per-token loop (RWKV-7 and RWKV-6), fp32 on CPU.

    PYTHONPATH=src python benchmarks/bench_wkv.py                 # T=512, B=1, H=8, N=64
    PYTHONPATH=src python benchmarks/bench_wkv.py --heads 40 --backward

Reports the best (minimum) wall time of several runs (robust on a shared, busy CPU) of each form (forward only, or forward+backward
with --backward) and the speedup. Inputs are random with RWKV-like decay ranges.
"""
from __future__ import annotations

import argparse
import math
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
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backward", action="store_true", help="time forward+backward instead of forward")
    args = ap.parse_args()
    r, k, v, lw7, lw6, a, b, u = inputs(args.batch, args.T, args.heads, args.head_size, args.backward)

    def run(fn, *xs):
        def go():
            y, s = fn(*xs)
            if args.backward:
                (y.square().sum() + s.square().sum()).backward()
        return go

    cases = {
        "rwkv7": (lambda *x: wkv7_recurrent(*x), lambda *x: wkv7_chunked(*x, chunk_size=args.chunk), (r, lw7, k, v, a, b)),
        "rwkv6": (lambda *x: wkv6_recurrent(*x), lambda *x: wkv6_chunked(*x, chunk_size=args.chunk), (r, lw6, k, v, u)),
    }
    mode = "fwd+bwd" if args.backward else "fwd"
    print(f"T={args.T} B={args.batch} H={args.heads} N={args.head_size} chunk={args.chunk} {mode} "
          f"threads={torch.get_num_threads()}")
    for name, (loop, chunked, xs) in cases.items():
        t_loop = timed(run(loop, *xs), args.repeats)
        t_chunk = timed(run(chunked, *xs), args.repeats)
        print(f"{name}: per-token loop {t_loop * 1e3:8.1f} ms | chunked {t_chunk * 1e3:7.1f} ms | "
              f"speedup {t_loop / t_chunk:5.1f}x")


if __name__ == "__main__":
    main()
