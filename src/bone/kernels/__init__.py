"""Flash-Bone: fused Bone autograd functions that keep nothing weight-sized for backward.

`bone.variants.get(name).fused(chunk_size)` returns one of the callables below, with the exact
signature and semantics of that variant's reference `forward`:
`(x, w, bias, block, dropout) -> x @ W'^T + bias`, with the same output dtype and the same
gradients wrt x and block (W and bias are frozen). `chunk_size` is the number of output rows of
any weight-sized temporary materialised at once (col's W', a dtype-cast W, shard's W + dW).
`w` is a tensor `(out, in)` or a `weights.WeightRows` (a quantized base, `bone.quant`): every
kernel reads W through that interface, so both run the same code.

  col    `blockwise.ColFn`: W' rebuilt chunk by chunk in forward and backward; on CUDA with
         Triton, `triton_col` applies the block transform to W tiles inside the GEMM instead.
  row    `blockwise.RowFn`: exact factorisation, W' never exists on any device.
  shard, mini  `shard.ShardFn`: keeps only the `(T, r)` slice sums.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from ..errors import ConfigError, UsageError
from . import triton_col
from .blockwise import ColFn, RowFn
from .shard import ShardFn, dropout_p
from .weights import DenseRows, WeightRows

__all__ = ["ColFn", "RowFn", "ShardFn", "ColForward", "RowForward", "ShardForward", "DenseRows", "WeightRows"]


def _check_chunk(chunk_size) -> None:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise ConfigError(f"chunk_size must be a positive int, got {chunk_size!r}")


def _check_frozen(w, bias: Tensor | None) -> None:
    if w.requires_grad or (bias is not None and bias.requires_grad):
        raise UsageError(
            "Flash-Bone kernels treat the base weight and bias as frozen, but one requires grad; "
            "freeze it (requires_grad_(False)) or use BoneConfig(fused=False) for the reference path"
        )


@dataclass(frozen=True)
class ColForward:
    """col: x `(..., in)`, w `(out, in)`, block `(out/r, r, r)` -> `(..., out)` in block dtype."""

    chunk_size: int  # output rows of W' materialised at once (torch path)

    def __post_init__(self) -> None:
        _check_chunk(self.chunk_size)

    def __call__(self, x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout: nn.Module | None = None) -> Tensor:
        _check_frozen(w, bias)
        if triton_col.usable(x, w, block):
            return triton_col.TritonColFn.apply(x, w, bias, block)
        return ColFn.apply(x, w, bias, block, self.chunk_size)


@dataclass(frozen=True)
class RowForward:
    """row: x `(..., in)`, w `(out, in)`, block `(in/r, r, r)` -> `(..., out)` in block dtype."""

    chunk_size: int  # output rows of a dtype-cast W materialised at once

    def __post_init__(self) -> None:
        _check_chunk(self.chunk_size)

    def __call__(self, x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout: nn.Module | None = None) -> Tensor:
        _check_frozen(w, bias)
        return RowFn.apply(x, w, bias, block, self.chunk_size)


@dataclass(frozen=True)
class ShardForward:
    """shard `(r, out)` / mini `(r, mini_r)` block: x `(..., in)` -> `(..., out)`."""

    chunk_size: int  # output rows of the folded W + dW materialised at once

    def __post_init__(self) -> None:
        _check_chunk(self.chunk_size)

    def __call__(self, x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout: nn.Module | None = None) -> Tensor:
        _check_frozen(w, bias)
        return ShardFn.apply(x, w, bias, block, dropout_p(dropout), self.chunk_size)
