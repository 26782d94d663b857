"""Flash-Bone: fused Bone autograd functions that keep nothing weight-sized for backward.

`forward_fn(variant, chunk_size)` returns a callable with the exact signature and semantics of
`bone.variants.get(variant).forward`: `(x, w, bias, block, dropout) -> x @ W'^T + bias`, with the
same output dtype and the same gradients wrt x and block (W and bias are frozen).

  col    `blockwise.ColFn`: W' rebuilt chunk by chunk in forward and backward; on CUDA with
         Triton, `triton_col` applies the block transform to W tiles inside the GEMM instead.
  row    `blockwise.RowFn`: exact factorisation, W' never exists on any device.
  shard, mini  `shard.ShardFn`: keeps only the `(T, r)` slice sums.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from .. import variants
from . import triton_col
from .blockwise import ColFn, RowFn
from .shard import ShardFn, dropout_p

__all__ = ["forward_fn", "ColFn", "RowFn", "ShardFn"]


def _check_frozen(w: Tensor, bias: Tensor | None) -> None:
    if w.requires_grad or (bias is not None and bias.requires_grad):
        raise ValueError(
            "Flash-Bone kernels treat the base weight and bias as frozen, but one requires grad; "
            "freeze it (requires_grad_(False)) or use BoneConfig(fused=False) for the reference path"
        )


def _col(chunk_size: int):
    def forward(x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout: nn.Module | None = None) -> Tensor:
        """col: x `(..., in)`, w `(out, in)`, block `(out/r, r, r)` -> `(..., out)` in block dtype."""
        _check_frozen(w, bias)
        if triton_col.usable(x, w, block):
            return triton_col.TritonColFn.apply(x, w, bias, block)
        return ColFn.apply(x, w, bias, block, chunk_size)
    return forward


def _row(chunk_size: int):
    def forward(x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout: nn.Module | None = None) -> Tensor:
        """row: x `(..., in)`, w `(out, in)`, block `(in/r, r, r)` -> `(..., out)` in block dtype."""
        _check_frozen(w, bias)
        return RowFn.apply(x, w, bias, block, chunk_size)
    return forward


def _shard(chunk_size: int):
    def forward(x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout: nn.Module | None = None) -> Tensor:
        """shard `(r, out)` / mini `(r, mini_r)` block: x `(..., in)` -> `(..., out)`."""
        _check_frozen(w, bias)
        return ShardFn.apply(x, w, bias, block, dropout_p(dropout), chunk_size)
    return forward


_FACTORY = {"col": _col, "row": _row, "shard": _shard, "mini": _shard}


def forward_fn(variant: str, chunk_size: int) -> Callable:
    """The fused forward for `variant` ("col", "row", "shard", "mini"); chunk_size = output rows
    of a weight-sized temporary materialised at once (col's W', a dtype-cast W, shard's W + dW)."""
    variants.get(variant)  # raises a clear error for an unknown name
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return _FACTORY[variant](chunk_size)
