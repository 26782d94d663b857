"""The four Bone variants: one class each, owning everything that differs between them.

Notation (torch layout): W is `(out, in)`, r the block size, W[a,b] the r x r block at output
block a / input block b, x_j the j-th r-wide slice of the input features.

  col   B: (out/r, r, r)   W'[a,b] = W[a,b] + W[a,b] @ B[a] + B[a]     (seed's BoneLinear, PEFT "bat")
  row   D: (in/r, r, r)    W'[a,b] = W[a,b] + W[a,b] @ D[b] + D[b]
  shard M: (r, out)        y = x W^T + (sum_j x_j) @ M;  dW[o, j*r+i] = M[i, o]   (MiSS default)
  mini  Dm: (r, mini_r)    M = Dm.repeat(1, out // mini_r), then as shard

RWKV-PEFT (`rwkv_peft_mode`) trains shard as its mode "bone" and row as its mode "bat"; it has no
col and no mini.

A variant object answers every variant-specific question the rest of bone asks: the block shape
and whether a layer fits (with a hint that works), the PEFT tag it is saved under and read from,
its fused (Flash-Bone) forward, whether unmerging needs a matrix inverse, and the reference math.
A fifth variant is one more class here plus one entry in `VARIANTS`.

The math methods are pure and differentiable; they are the references the fused kernels in
`bone.kernels` are checked against. `forward(x, w, bias, block, dropout)` returns `x @ W'^T + bias`:
col/row compute in the block's dtype; shard/mini run the base product in the weight's dtype and
the shard path in the block's dtype (as PEFT does). `w` may be a quantized base's
`kernels.WeightRows`: the reference then runs on its whole dequantized weight (`dense()`).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import kernels
from .kernels.weights import dense
from .errors import AdapterError, ConfigError

MAX_COND = 1e5  # col/row unmerge refuses blocks whose I + B has a larger condition number


def nearest(value: int, ok: Callable[[int], bool]) -> int:
    """The integer closest to `value` (>= 1) for which ok(n) holds; ties go to the smaller."""
    for d in range(0, value + 1):
        for cand in (value - d, value + d):
            if cand >= 1 and ok(cand):
                return cand
    return 1


class Variant:
    """Interface; the module docstring gives each subclass's formulas."""

    name: str
    about: str  # one line for help texts
    peft_type: str = "MISS"  # "peft_type" written to adapter_config.json
    peft_init: Any = None  # "init_weights" written to adapter_config.json
    peft_reads: tuple[tuple[str, Any], ...] = ()  # (peft_type, init_weights) pairs read as this variant
    needs_inverse: bool = False  # unmerge inverts I + block (refused when ill-conditioned)
    has_input_path: bool = False  # the adapter reads x through its own path (so dropout applies)
    uses_mini_r: bool = False
    builds_merged: bool = True  # the fused kernel builds W' (or W + dW), so BoneConfig.keep_merged applies
    rwkv_peft_mode: str | None = None  # RWKV-PEFT's name for this variant ("bone", "bat"); None: RWKV-PEFT has no such form
    exact_lora: bool = False  # `lora_factors` gives B, A with B @ A == W' - W whatever W (a LoRA export is exact)

    # --- shapes ---------------------------------------------------------------------------
    def block_shape(self, out: int, in_: int, r: int, mini_r: int | None) -> tuple[int, ...]:
        raise NotImplementedError

    def check(self, out: int, in_: int, r: int, mini_r: int | None) -> str | None:
        """Why this variant cannot adapt an (out, in) weight with block size r, or None."""
        raise NotImplementedError

    def hint(self, out: int, in_: int, r: int, mini_r: int | None) -> str:
        """A value that works for a layer `check` refused, e.g. 'nearest r that works: 16'."""
        raise NotImplementedError

    def block_fits(self, shape: tuple[int, ...], r: int, mini_r: int | None) -> bool:
        """Whether a stored block of `shape` can belong to this variant with r (and mini_r),
        whatever the base model (used to catch a config that contradicts the tensors)."""
        raise NotImplementedError

    def block_pattern(self, r: int, mini_r: int | None) -> str:
        """The shapes `block_fits` accepts, for error messages, e.g. '(n, 64, 64)'."""
        raise NotImplementedError

    def validate(self, r: int, mini_r: int | None, dropout: float, keep_merged: bool | str = False) -> str | None:
        """Why a config with these values is invalid for this variant, or None."""
        if self.uses_mini_r and mini_r is None:
            return f"variant={self.name!r} needs mini_r (a divisor of every target layer's out_features)"
        if not self.uses_mini_r and mini_r is not None:
            return f"mini_r is only used by variant='mini' (variant is {self.name!r}); remove it"
        if dropout and not self.has_input_path:
            return f"dropout applies to shard/mini only; variant {self.name!r} has no input path to drop"
        if keep_merged and not self.builds_merged:
            return f"keep_merged does nothing for variant {self.name!r} (its kernel never builds W'); remove it"
        return None

    # --- computation ------------------------------------------------------------------------
    def fused(self, chunk_size: int, keep_merged: bool | str = False) -> Callable:
        """The Flash-Bone forward: same signature and gradients as `forward` (see bone.kernels;
        keep_merged as BoneConfig.keep_merged)."""
        raise NotImplementedError

    def merged(self, w: Tensor, block: Tensor) -> Tensor:
        """W' from W `(out, in)`; arithmetic in the inputs' dtype (callers pass fp32)."""
        raise NotImplementedError

    def out_dtype(self, w_dtype: torch.dtype, block_dtype: torch.dtype) -> torch.dtype:
        """The dtype `forward` computes and returns x @ W'^T in: the block's (col, row)."""
        return block_dtype

    def unmerged(self, w_merged: Tensor, block: Tensor) -> Tensor:
        """W from W'; the exact inverse of `merged`."""
        raise NotImplementedError

    def forward(self, x: Tensor, w: Tensor, bias: Tensor | None, block: Tensor, dropout=None) -> Tensor:
        raise NotImplementedError

    def lora_factors(self, block: Tensor, out: int, in_: int) -> tuple[Tensor, Tensor] | None:
        """(B `(out, k)`, A `(k, in)`) with B @ A == W' - W exactly, independent of W (`exact_lora`
        variants); None when the update depends on W and has no exact low-rank form (col/row, which
        a LoRA export approximates through a truncated SVD of W' - W)."""
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

    Raises AdapterError naming the blocks whose I + block is singular or has condition number
    above `max_cond` (inverting those would silently return wrong weights)."""
    eye = torch.eye(block.shape[-1], dtype=torch.float64, device=block.device)
    m = eye + block.detach().to(torch.float64)
    cond = torch.linalg.cond(m)
    bad = (~torch.isfinite(cond)) | (cond > max_cond)
    if bad.any():
        idx = bad.nonzero().flatten().tolist()
        worst = cond[bad].max().item()
        raise AdapterError(
            f"I + block is singular or ill-conditioned for block(s) {idx[:8]}{'...' if len(idx) > 8 else ''} "
            f"(condition number {worst:.3g} > {max_cond:.0e}); unmerging would return wrong weights. "
            "Reload the base weights instead of unmerging."
        )
    return torch.linalg.inv(m)


class Col(Variant):
    """W'[a,b] = W[a,b] (I + B[a]) + B[a]: one block per output block, shared along the input."""

    name = "col"
    about = "seed's Bone-col / PEFT MiSS bat: one r x r block per output block, W' = W + W B + B"
    peft_init = "bat"
    peft_reads = (("MISS", "bat"), ("BONE", "bat"))
    needs_inverse = True

    def block_shape(self, out, in_, r, mini_r):
        return (out // r, r, r)

    def check(self, out, in_, r, mini_r):
        if out % r or in_ % r:
            return f"needs out and in divisible by r={r} (whole r x r blocks)"
        return None

    def hint(self, out, in_, r, mini_r):
        g = math.gcd(out, in_)
        return f"nearest r that works: {nearest(r, lambda n: g % n == 0)}"

    def block_fits(self, shape, r, mini_r):
        return len(shape) == 3 and shape[1] == shape[2] == r

    def block_pattern(self, r, mini_r):
        return f"(n, {r}, {r})"

    def fused(self, chunk_size, keep_merged=False):
        return kernels.ColForward(chunk_size, keep_merged)

    def per_block(self, block: Tensor) -> Tensor:
        """The block applied at each (a, b), broadcastable to (out/r, in/r, r, r)."""
        return block[:, None]

    def merged(self, w, block):
        bb = self.per_block(block)
        wb = _as_blocks(w, block.shape[-1])
        return _from_blocks(wb + (wb @ bb + bb))  # W + (W B + B): the order of RWKV-PEFT's merge

    def unmerged(self, w_merged, block):
        inv = self.per_block(inverse_blocks(block))
        bb = self.per_block(block.to(torch.float64))
        wb = _as_blocks(w_merged.to(torch.float64), block.shape[-1])
        return _from_blocks((wb - bb) @ inv).to(w_merged.dtype)

    def forward(self, x, w, bias, block, dropout=None):
        dt = block.dtype
        b = None if bias is None else bias.to(dt)
        return F.linear(x.to(dt), self.merged(dense(w).to(dt), block), b)


class Row(Col):
    """W'[a,b] = W[a,b] (I + D[b]) + D[b]: one block per input block, shared along the output."""

    name = "row"
    about = "Bone-row / RWKV-PEFT bat: one r x r block per input block (PEFT has no row; saved as BONE_ROW)"
    peft_type = "BONE_ROW"  # PEFT refuses this type (KeyError) rather than misreading the blocks
    peft_init = "row"
    peft_reads = (("BONE_ROW", "row"),)
    builds_merged = False  # exact factorisation: W' never exists
    rwkv_peft_mode = "bat"  # its BatLinear: a 3-D (in/r, r, r) block applied per input block

    def block_shape(self, out, in_, r, mini_r):
        return (in_ // r, r, r)

    def fused(self, chunk_size, keep_merged=False):
        return kernels.RowForward(chunk_size)

    def per_block(self, block):
        return block[None]


def shard_sum(x: Tensor, r: int) -> Tensor:
    """(..., in) -> (..., r): sum of the r-wide input slices, zero-padding the last one."""
    pad = (-x.shape[-1]) % r
    if pad:
        x = F.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], x.shape[-1] // r, r).sum(-2)


class Shard(Variant):
    """y = x W^T + (sum_j x_j) M: one (r, out) shard shared by every input slice."""

    name = "shard"
    about = "new Bone / DiSHA / MiSS default: one (r, out) shard shared by all input slices, y = x W^T + (sum_j x_j) M"
    peft_init = True
    peft_reads = (("MISS", True), ("MISS", False), ("BONE", True), ("BONE", False))
    has_input_path = True
    rwkv_peft_mode = "bone"  # its BoneLinear: a 2-D (r, out) block, zero-padded input
    exact_lora = True

    def block_shape(self, out, in_, r, mini_r):
        return (r, out)

    def check(self, out, in_, r, mini_r):
        if r > in_:
            return f"r={r} is larger than in_features={in_}"
        return None

    def hint(self, out, in_, r, mini_r):
        return f"nearest r that works: {in_}"

    def block_fits(self, shape, r, mini_r):
        return len(shape) == 2 and shape[0] == r

    def block_pattern(self, r, mini_r):
        return f"({r}, out)"

    def fused(self, chunk_size, keep_merged=False):
        return kernels.ShardForward(chunk_size, keep_merged)

    def shard(self, block: Tensor, out: int) -> Tensor:
        """The (r, out) matrix M."""
        return block

    def delta(self, block: Tensor, out: int, in_: int) -> Tensor:
        """dW `(out, in)`: M^T tiled along in, the last tile cut to in % r columns."""
        m = self.shard(block, out)
        r = m.shape[0]
        return m.t().repeat(1, -(-in_ // r))[:, :in_]

    def lora_factors(self, block, out, in_):
        """B = M^T `(out, r)`, A = [I_r I_r ... I_r] `(r, in)` (the last identity cut to in % r
        columns): B @ A is M^T tiled along in, i.e. `delta`, with LoRA scaling 1."""
        m = self.shard(block, out)
        r = m.shape[0]
        eye = torch.eye(r, dtype=m.dtype, device=m.device)
        return m.t(), eye.repeat(1, -(-in_ // r))[:, :in_]

    def merged(self, w, block):
        return w + self.delta(block, *w.shape)

    def out_dtype(self, w_dtype, block_dtype):
        return torch.promote_types(w_dtype, block_dtype)  # base product in W's dtype + shard path in the block's

    def unmerged(self, w_merged, block):
        return w_merged - self.delta(block, *w_merged.shape)

    def forward(self, x, w, bias, block, dropout=None):
        w = dense(w)
        base = F.linear(x.to(w.dtype), w, None if bias is None else bias.to(w.dtype))
        xd = x if dropout is None else dropout(x)
        m = self.shard(block, w.shape[0])
        return base + shard_sum(xd.to(block.dtype), m.shape[0]) @ m


class Mini(Shard):
    """shard with M = Dm repeated along out: one (r, mini_r) block for the whole layer."""

    name = "mini"
    about = "MiSS mini: one (r, mini_r) block repeated along out, then as shard"
    peft_init = "mini"
    peft_reads = (("MISS", "mini"),)
    uses_mini_r = True
    rwkv_peft_mode = None  # RWKV-PEFT has no mini

    def block_shape(self, out, in_, r, mini_r):
        return (r, mini_r)

    def check(self, out, in_, r, mini_r):
        if out % mini_r:
            return f"needs out_features divisible by mini_r={mini_r}"
        return super().check(out, in_, r, mini_r)

    def hint(self, out, in_, r, mini_r):
        if out % mini_r:
            return f"nearest mini_r that works: {nearest(mini_r, lambda n: out % n == 0)}"
        return super().hint(out, in_, r, mini_r)

    def block_fits(self, shape, r, mini_r):
        return tuple(shape) == (r, mini_r)

    def block_pattern(self, r, mini_r):
        return f"({r}, {mini_r})"

    def shard(self, block, out):
        return block.repeat(1, out // block.shape[1])


VARIANTS: dict[str, Variant] = {v.name: v for v in (Col(), Row(), Shard(), Mini())}


def get(name: str) -> Variant:
    """The Variant object for a variant name."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ConfigError(f"unknown Bone variant {name!r}; choose one of {list(VARIANTS)}") from None


def from_peft(peft_type: str | None, init_weights: Any) -> Variant | None:
    """The variant PEFT's (peft_type, init_weights) describes, or None when none does."""
    for v in VARIANTS.values():
        if any(peft_type == t and init_weights == i and type(init_weights) is type(i) for t, i in v.peft_reads):
            return v
    return None
