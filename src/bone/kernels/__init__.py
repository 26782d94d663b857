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

`keep_merged` (BoneConfig.keep_merged) trades that memory for time on col and shard/mini: a call
that keeps saves the merged weight it built in forward (col W', shard W + dW; one `(out, in)`
tensor in the block's dtype, alive until that call's backward) and backward reads it instead of
building it again. At T tokens the rebuild costs about what a T = 100-150 token GEMM of the layer
costs on a CPU (r = 64), so keeping saves ~15% of the layer's step at T = 64, ~10% at 256-1024 and
little at 4096. False (default) never keeps, True always, "auto" keeps calls of at most
`AUTO_TOKENS_PER_R * r` tokens (`keeps_merged`), for shard/mini only from
`AUTO_SHARD_MIN_TOKENS_PER_R * r` tokens (fewer run the products, cheaper than one fold). row never
builds W'; Triton col forms W' in registers; shard/mini with dropout or a quantized base do not
fold: none of these has anything to keep. A shard/mini call that keeps folds whatever its size; one
that does not folds only from `folds`' number of tokens.
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


AUTO_TOKENS_PER_R = 16  # keep_merged="auto" keeps calls of at most this many tokens per unit of r
AUTO_SHARD_MIN_TOKENS_PER_R = 4  # ... and, for shard/mini, of at least this many (below it their products beat a fold)
# shard / mini fold W + dW for calls of at least this many tokens per r-wide input slice (`folds`)
SHARD_FOLD_TOKENS_PER_SLICE = 64
MINI_FOLD_TOKENS_PER_SLICE = 256


def keeps_merged(mode: bool | str, tokens: int, r: int, at_least: int = 0) -> bool:
    """Whether a call over `tokens` tokens keeps its merged weight for backward (see the module
    docstring); "auto" keeps calls of `at_least` to AUTO_TOKENS_PER_R * r tokens."""
    return at_least <= tokens <= AUTO_TOKENS_PER_R * r if mode == "auto" else bool(mode)


def folds(tokens: int, in_: int, r: int, mini: bool) -> bool:
    """Whether a shard (mini: mini) call over `tokens` tokens folds its delta into W rather than run
    the products (`shard` module docstring). The products' cost grows with the tokens: shard's two
    `T x r x out` GEMMs, mini's passes over y, g and dx; the fold's two passes over the `(out, in)`
    weight do not. Layer-level sweeps on this project's 2-core CPU (hidden 512 / 576 / 1024, T = 128
    to 4096, `benchmarks/shard_fold_sweep.py`) put the crossover near 64 tokens per input slice for
    shard (the faster path at 11-12 of 12 points in each of three runs) and 256 for mini (most
    points; its two paths are within a few percent from ~2048 tokens)."""
    per_slice = MINI_FOLD_TOKENS_PER_SLICE if mini else SHARD_FOLD_TOKENS_PER_SLICE
    return tokens >= per_slice * -(-in_ // r)


def _check_keep(keep_merged) -> None:
    if not (isinstance(keep_merged, bool) or keep_merged == "auto"):
        raise ConfigError(f"keep_merged must be True, False or 'auto', got {keep_merged!r}")


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
    keep_merged: bool | str = False  # keep W' from forward for backward (see the module docstring)

    def __post_init__(self) -> None:
        _check_chunk(self.chunk_size)
        _check_keep(self.keep_merged)

    def __call__(self, x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout: nn.Module | None = None) -> Tensor:
        _check_frozen(w, bias)
        if triton_col.usable(x, w, block):
            return triton_col.TritonColFn.apply(x, w, bias, block)
        r = block.shape[-1]
        keep = keeps_merged(self.keep_merged, x.numel() // max(1, x.shape[-1]), r)
        return ColFn.apply(x, w, bias, block, self.chunk_size, keep)


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
    keep_merged: bool | str = False  # keep W + dW from forward for backward (see the module docstring)

    def __post_init__(self) -> None:
        _check_chunk(self.chunk_size)
        _check_keep(self.keep_merged)

    def __call__(self, x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout: nn.Module | None = None) -> Tensor:
        _check_frozen(w, bias)
        tokens, r = x.numel() // max(1, x.shape[-1]), block.shape[0]
        keep = keeps_merged(self.keep_merged, tokens, r, AUTO_SHARD_MIN_TOKENS_PER_R * r)  # keeping needs the folded W + dW
        fold = keep or folds(tokens, x.shape[-1], r, mini=block.shape[1] != w.shape[0])
        return ShardFn.apply(x, w, bias, block, dropout_p(dropout), self.chunk_size, keep, fold)
