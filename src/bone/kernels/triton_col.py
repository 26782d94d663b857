"""Flash-Bone col on CUDA through the Triton kernels in `triton_kernels` (autograd wrapper).

Selected by `Variant.fused` for col (`bone.kernels.ColForward`) when x is on CUDA, triton imports and r is a
power of two in [16, 128]; otherwise the torch `ColFn` runs. Saves x, B and the frozen W
parameter only. Tile sizes are fixed (`TILES`), no autotuning.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd import Function

SUPPORTED_R = (16, 32, 64, 128)


@dataclass(frozen=True)
class Tiles:
    bm: int = 64  # tokens per program in the forward and dx kernels (>= 16)
    bt: int = 64  # tokens per step of the dB kernel's G accumulation (>= 16)
    split: int = 8  # programs per output block in the dB kernel (partials summed afterwards)
    exact_dots: bool = False  # multiply dot inputs as fp32 even for bf16/fp16 blocks (needed by the CPU interpreter)


TILES = Tiles()


@functools.cache
def _kernels():
    """The triton_kernels module, or None when triton cannot be imported."""
    try:
        from . import triton_kernels
    except ImportError:
        return None
    return triton_kernels


DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def usable(x: Tensor, w, block: Tensor) -> bool:
    """Whether the Triton col path applies: a plain weight tensor (not a quantized base's
    WeightRows), CUDA tensors in fp32/bf16/fp16, supported r, triton importable."""
    return (isinstance(w, Tensor) and x.is_cuda and w.is_cuda and block.is_cuda and block.shape[-1] in SUPPORTED_R
            and {x.dtype, w.dtype, block.dtype} <= set(DTYPES) and _kernels() is not None)


def _grid_rows(t: int, bm: int) -> int:
    return (t + bm - 1) // bm


class TritonColFn(Function):
    """col forward/backward with W' formed tile by tile in registers (see `triton_kernels`)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, tiles: Tiles = TILES) -> Tensor:
        k = _kernels()
        dt, (out, in_), r = block.dtype, w.shape, block.shape[-1]
        x2 = x.reshape(-1, in_)
        t = x2.shape[0]
        blk = block.contiguous()
        y = torch.empty(t, out, dtype=dt, device=x.device)
        k.col_fwd[(_grid_rows(t, tiles.bm), out // r)](
            x2, w, blk, bias if bias is not None else blk, y, t, in_,
            x2.stride(0), x2.stride(1), w.stride(0), w.stride(1), y.stride(0), y.stride(1),
            HAS_BIAS=bias is not None, R=r, BM=tiles.bm, F32=tiles.exact_dots or dt == torch.float32)
        ctx.save_for_backward(x, w, block)
        ctx.tiles = tiles
        return y.view(*x.shape[:-1], out)

    @staticmethod
    def backward(ctx, g: Tensor):
        k = _kernels()
        x, w, block = ctx.saved_tensors
        tiles = ctx.tiles
        dt, (out, in_), r = block.dtype, w.shape, block.shape[-1]
        g2 = g.reshape(-1, out)
        x2 = x.reshape(-1, in_)
        t = g2.shape[0]
        blk = block.contiguous()
        dx = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.empty(t, in_, dtype=dt, device=g.device)
            k.col_dx[(_grid_rows(t, tiles.bm), in_ // r)](
                g2, w, blk, dx, t, out,
                g2.stride(0), g2.stride(1), w.stride(0), w.stride(1), dx.stride(0), dx.stride(1),
                R=r, BM=tiles.bm, F32=tiles.exact_dots or dt == torch.float32)
            dx = dx.to(x.dtype).view(x.shape)
        if ctx.needs_input_grad[3]:
            split = min(tiles.split, in_ // r)
            part = torch.empty(split, out // r, r, r, dtype=torch.float32, device=g.device)
            k.col_db[(out // r, split)](
                g2, x2, w, part, t, in_, out,
                g2.stride(0), g2.stride(1), x2.stride(0), x2.stride(1), w.stride(0), w.stride(1),
                R=r, BT=tiles.bt, SPLIT=split)
            db = part.sum(0).to(dt)
        return dx, None, None, db, None
