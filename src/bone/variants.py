"""The math of the four Bone variants, one small object per variant.

Notation (torch layout): W is `(out, in)`, r the block size, W[a,b] the r x r block at output
block a / input block b, x_j the j-th r-wide slice of the input features.

  col   B: (out/r, r, r)   W'[a,b] = W[a,b] + W[a,b] @ B[a] + B[a]     (seed's BoneLinear, PEFT "bat")
  row   D: (in/r, r, r)    W'[a,b] = W[a,b] + W[a,b] @ D[b] + D[b]
  shard M: (r, out)        y = x W^T + (sum_j x_j) @ M;  dW[o, j*r+i] = M[i, o]   (MiSS default)
  mini  Dm: (r, mini_r)    M = Dm.repeat(1, out // mini_r), then as shard

Every function here is pure and differentiable; these are the reference implementations that the
fused kernels in `bone.kernels` are checked against. `forward(x, w, bias, block, dropout)` returns
`x @ W'^T + bias`: col/row compute in the block's dtype; shard/mini run the base product in the
weight's dtype and the shard path in the block's dtype (as PEFT does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_COND = 1e5  # col/row unmerge refuses blocks whose I + B has a larger condition number


class Variant:
    """Interface; see the module docstring for the formulas of each subclass."""

    name: str

    def block_shape(self, out: int, in_: int, r: int, mini_r: int | None) -> tuple[int, ...]:
        raise NotImplementedError

    def check(self, out: int, in_: int, r: int, mini_r: int | None) -> str | None:
        """Why this variant cannot adapt an (out, in) weight with block size r, or None."""
        raise NotImplementedError

    def merged(self, w: Tensor, block: Tensor) -> Tensor:
        """W' from W `(out, in)`; arithmetic in the inputs' dtype (callers pass fp32)."""
        raise NotImplementedError

    def unmerged(self, w_merged: Tensor, block: Tensor) -> Tensor:
        """W from W'; the exact inverse of `merged`."""
        raise NotImplementedError

    def forward(self, x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout=None) -> Tensor:
        raise NotImplementedError


def _whole_blocks(out: int, in_: int, r: int) -> str | None:
    if out % r or in_ % r:
        return f"needs out and in divisible by r={r} (whole r x r blocks)"
    return None


def _as_blocks(w: Tensor, r: int) -> Tensor:
    """(out, in) -> (out/r, in/r, r, r): result[a, b] = W[a, b]."""
    out, in_ = w.shape
    return w.reshape(out // r, r, in_ // r, r).transpose(1, 2)


def _from_blocks(blocks: Tensor) -> Tensor:
    """Inverse of `_as_blocks`."""
    a, b, r, _ = blocks.shape
    return blocks.transpose(1, 2).reshape(a * r, b * r)


def inverse_blocks(block: Tensor, max_cond: float = MAX_COND) -> Tensor:
    """(I + block)^-1 for a stack of r x r blocks, in float64.

    Raises ValueError naming the blocks whose I + block is singular or has condition number
    above `max_cond` (inverting those would silently return wrong weights)."""
    eye = torch.eye(block.shape[-1], dtype=torch.float64, device=block.device)
    m = eye + block.detach().to(torch.float64)
    cond = torch.linalg.cond(m)
    bad = (~torch.isfinite(cond)) | (cond > max_cond)
    if bad.any():
        idx = bad.nonzero().flatten().tolist()
        worst = cond[bad].max().item()
        raise ValueError(
            f"I + block is singular or ill-conditioned for block(s) {idx[:8]}{'...' if len(idx) > 8 else ''} "
            f"(condition number {worst:.3g} > {max_cond:.0e}); unmerging would return wrong weights. "
            "Reload the base weights instead of unmerging."
        )
    return torch.linalg.inv(m)


class Col(Variant):
    """W'[a,b] = W[a,b] (I + B[a]) + B[a]: one block per output block, shared along the input."""

    name = "col"

    def block_shape(self, out, in_, r, mini_r):
        return (out // r, r, r)

    def check(self, out, in_, r, mini_r):
        return _whole_blocks(out, in_, r)

    def per_block(self, block: Tensor) -> Tensor:
        """The block applied at each (a, b), broadcastable to (out/r, in/r, r, r)."""
        return block[:, None]

    def merged(self, w, block):
        bb = self.per_block(block)
        wb = _as_blocks(w, block.shape[-1])
        return _from_blocks(wb + wb @ bb + bb)

    def unmerged(self, w_merged, block):
        inv = self.per_block(inverse_blocks(block))
        bb = self.per_block(block.to(torch.float64))
        wb = _as_blocks(w_merged.to(torch.float64), block.shape[-1])
        return _from_blocks((wb - bb) @ inv).to(w_merged.dtype)

    def forward(self, x, w, bias, block, dropout=None):
        dt = block.dtype
        b = None if bias is None else bias.to(dt)
        return F.linear(x.to(dt), self.merged(w.to(dt), block), b)


class Row(Col):
    """W'[a,b] = W[a,b] (I + D[b]) + D[b]: one block per input block, shared along the output."""

    name = "row"

    def block_shape(self, out, in_, r, mini_r):
        return (in_ // r, r, r)

    def per_block(self, block):
        return block[None]


def shard_sum(x: Tensor, r: int) -> Tensor:
    """(..., in) -> (..., r): sum of the r-wide input slices, zero-padding the last one."""
    pad = (-x.shape[-1]) % r
    if pad:
        x = F.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], x.shape[-1] // r, r).sum(-2)


class Shard(Variant):
    name = "shard"

    def block_shape(self, out, in_, r, mini_r):
        return (r, out)

    def check(self, out, in_, r, mini_r):
        if r > in_:
            return f"r={r} is larger than in_features={in_}"
        return None

    def shard(self, block: Tensor, out: int) -> Tensor:
        """The (r, out) matrix M."""
        return block

    def delta(self, block: Tensor, out: int, in_: int) -> Tensor:
        """dW `(out, in)`: M^T tiled along in, the last tile cut to in % r columns."""
        m = self.shard(block, out)
        r = m.shape[0]
        return m.t().repeat(1, -(-in_ // r))[:, :in_]

    def merged(self, w, block):
        return w + self.delta(block, *w.shape)

    def unmerged(self, w_merged, block):
        return w_merged - self.delta(block, *w_merged.shape)

    def forward(self, x, w, bias, block, dropout=None):
        base = F.linear(x, w, bias)
        xd = x if dropout is None else dropout(x)
        m = self.shard(block, w.shape[0])
        return base + shard_sum(xd.to(block.dtype), m.shape[0]) @ m


class Mini(Shard):
    name = "mini"

    def block_shape(self, out, in_, r, mini_r):
        return (r, mini_r)

    def check(self, out, in_, r, mini_r):
        if out % mini_r:
            return f"needs out_features divisible by mini_r={mini_r}"
        return super().check(out, in_, r, mini_r)

    def shard(self, block, out):
        return block.repeat(1, out // block.shape[1])


VARIANT = {v.name: v for v in (Col(), Row(), Shard(), Mini())}


def get(name: str) -> Variant:
    """The Variant object for a variant name."""
    try:
        return VARIANT[name]
    except KeyError:
        raise ValueError(f"unknown Bone variant {name!r}; choose one of {sorted(VARIANT)}") from None
