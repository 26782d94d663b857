"""The r-wide input slices of shard/mini, handled without a zero-padded copy of the input.

With in = k*r + rem, the padded-slice sum equals the sum of the k whole slices plus the ragged
tail added into the first `rem` columns; tiling `(T, r)` back over `in` cuts the last tile.
"""
from __future__ import annotations

import torch
from torch import Tensor


def slice_sum(x2: Tensor, r: int, dt: torch.dtype) -> Tensor:
    """x2 `(T, in)` -> s `(T, r)` in dtype dt: s = sum_j x_j, the last slice zero-padded."""
    t, in_ = x2.shape
    k, rem = in_ // r, in_ % r
    s = x2[:, :k * r].reshape(t, k, r).sum(1, dtype=dt)
    if rem:
        s[:, :rem] += x2[:, k * r:].to(dt)
    return s


def _tiled_(op, dx: Tensor, ds: Tensor) -> Tensor:
    """dx `(T, in)` op= ds `(T, r)` tiled along in (last tile cut); in place, returns dx."""
    t, in_ = dx.shape
    r = ds.shape[1]
    k, rem = in_ // r, in_ % r
    op(dx[:, :k * r].view(t, k, r), ds[:, None, :].to(dx.dtype))
    if rem:
        op(dx[:, k * r:], ds[:, :rem].to(dx.dtype))
    return dx


def add_tiled_(dx: Tensor, ds: Tensor) -> Tensor:
    """dx += ds tiled along in (see `_tiled_`)."""
    return _tiled_(Tensor.add_, dx, ds)


def mul_tiled_(dx: Tensor, ds: Tensor) -> Tensor:
    """dx *= ds tiled along in (see `_tiled_`)."""
    return _tiled_(Tensor.mul_, dx, ds)


def tiled_plus(wc: Tensor, mt: Tensor) -> Tensor:
    """A new `(c, in)` tensor wc + mt `(c, r)` tiled along in (last tile cut)."""
    c, in_ = wc.shape
    r = mt.shape[1]
    if in_ % r:
        return add_tiled_(wc.clone(memory_format=torch.contiguous_format), mt)
    return (wc.reshape(c, in_ // r, r) + mt[:, None, :]).view(c, in_)
