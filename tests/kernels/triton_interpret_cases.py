"""Triton col kernels vs the reference: on the CPU under TRITON_INTERPRET=1, or compiled on a GPU.

Run as a script by test_kernels_triton.py (the variable must be set before triton is imported,
so this runs in its own process). Exits non-zero with the failing case on a mismatch.
With `--cuda` (no interpreter; `benchmarks/gpu_check.sh` on a lent GPU) the same cases run on the
CUDA device, with the small fixed tiles and again with the production tiles (`triton_col.TILES`).
"""
from __future__ import annotations

import os
import sys

import torch

CUDA = "--cuda" in sys.argv[1:]
assert CUDA or os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1, or with --cuda on a GPU"
assert not (CUDA and os.environ.get("TRITON_INTERPRET")), "--cuda runs the compiled kernels: unset TRITON_INTERPRET"

from bone import variants  # noqa: E402
from bone.kernels.triton_col import TILES as PRODUCTION, Tiles, TritonColFn  # noqa: E402

TILES = Tiles(bm=16, bt=16, split=2, exact_dots=True)  # fixed, small: no autotuning


def run(fn, x, w, b, blk):
    x = x.detach().requires_grad_()
    blk = blk.detach().requires_grad_()
    y = fn(x, w, b, blk)
    gy = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape).to(y.dtype)
    return (y, *torch.autograd.grad(y, (x, blk), gy))


def main(tiles: Tiles, device: str) -> int:
    gen = torch.Generator().manual_seed(0)
    ref = variants.get("col").forward
    triton_fn = lambda x, w, b, blk: TritonColFn.apply(x, w, b, blk, tiles)  # noqa: E731
    eps = {torch.float32: 2.0 ** -23, torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10}
    cases = 0
    for base, adapter in [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                          (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)]:
        for out, in_, r, lead, transposed, bias in [(48, 32, 16, (2, 9), False, True), (32, 64, 32, (21,), True, False)]:
            x = torch.randn(*lead, in_, generator=gen).to(base)
            w = (torch.randn(in_, out, generator=gen).t() if transposed else torch.randn(out, in_, generator=gen)).to(base)
            b = torch.randn(out, generator=gen).to(base) if bias else None
            blk = (0.2 * torch.randn(out // r, r, r, generator=gen)).to(adapter)
            x, w, blk = x.to(device), w.to(device), blk.to(device)
            b = None if b is None else b.to(device)
            got = run(triton_fn, x, w, b, blk)
            low = run(ref, x, w, b, blk)
            d = lambda t: None if t is None else t.double()  # noqa: E731
            truth = run(ref, d(x), d(w), d(b), d(blk))
            for name, g, lo, t in zip(("y", "dx", "dB"), got, low, truth):
                scale = t.abs().max().item()
                e = eps[min(base, adapter, key=lambda dt: -eps[dt])]
                err, ref_err = (g.double() - t).abs().max().item(), (lo.double() - t).abs().max().item()
                if g.dtype != lo.dtype or g.shape != lo.shape or err > 4 * ref_err + 8 * e * scale:
                    print(f"FAIL {base} {adapter} {out}x{in_} r={r} {name}: err {err:.3g} ref err {ref_err:.3g} "
                          f"dtype {g.dtype}/{lo.dtype}")
                    return 1
            cases += 1
    print(f"OK {cases} cases" + (f" on {torch.cuda.get_device_name()} with {tiles}" if device == "cuda" else ""))
    return 0


if __name__ == "__main__":
    if not CUDA:
        sys.exit(main(TILES, "cpu"))
    sys.exit(main(Tiles(bm=16, bt=16, split=2), "cuda") or main(PRODUCTION, "cuda"))
