"""BoneLinear: a linear layer (torch Linear or transformers Conv1D) carrying one Bone adapter.

The layer keeps the original module's `weight` and `bias` Parameters under the same names, so a
model's state-dict keys do not change; the adapter adds `bone_block` (the only trainable tensor)
and, for shard/mini with dropout, a parameter-free `bone_dropout`. Everything adapter-owned is
named `bone_*`: that prefix drives freezing, saving and filtering.

Shapes: x `(..., in)`, weight `(out, in)` for Linear and `(in, out)` for Conv1D, y `(..., out)`.
Casts happen once at the boundary: the variant function receives the base-dtype input and weight
and the adapter-dtype block, and its result is cast back to the input's dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernels, variants
from .config import BoneConfig


def conv1d_class():
    """transformers' Conv1D (GPT-2 family, weight stored `(in, out)`), or None without transformers."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # transformers is a dependency, but the core works without it
        return None
    return Conv1D


def is_linear_like(module: nn.Module) -> bool:
    conv1d = conv1d_class()
    return isinstance(module, nn.Linear) or (conv1d is not None and isinstance(module, conv1d))


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of a Linear or Conv1D."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    in_, out = module.weight.shape  # Conv1D stores (in, out)
    return out, in_


class BoneLinear(nn.Module):
    """A Linear/Conv1D with a Bone adapter; `merged` / `disabled` switch it to the base product."""

    def __init__(self, base: nn.Module, cfg: BoneConfig):
        super().__init__()
        self.transposed = not isinstance(base, nn.Linear)  # Conv1D: weight is (in, out)
        self.out_features, self.in_features = linear_shape(base)
        self.weight = base.weight
        self.bias = base.bias
        self.variant = variants.get(cfg.variant)
        self.r = cfg.r
        self.mini_r = cfg.mini_r
        shape = self.variant.block_shape(self.out_features, self.in_features, cfg.r, cfg.mini_r)
        dtype = cfg.torch_dtype or base.weight.dtype
        self.bone_block = nn.Parameter(torch.zeros(shape, dtype=dtype, device=base.weight.device))
        self.bone_dropout = nn.Dropout(cfg.dropout) if cfg.dropout else None
        self._fn = kernels.forward_fn(cfg.variant, cfg.chunk_size) if cfg.fused else self.variant.forward
        self.merged = False  # adapter folded into self.weight
        self.disabled = False  # bone.disabled(): behave as the base layer

    def weight_oi(self) -> Tensor:
        """The base weight in `(out, in)` layout (a view for Conv1D)."""
        return self.weight.t() if self.transposed else self.weight

    def forward(self, x: Tensor) -> Tensor:
        if self.merged or self.disabled:
            return F.linear(x, self.weight_oi(), self.bias)
        return self._fn(x, self.weight_oi(), self.bias, self.bone_block, self.bone_dropout).to(x.dtype)

    def _stored(self, w_oi: Tensor) -> Tensor:
        """An `(out, in)` result in the weight's storage layout and dtype (the one cast)."""
        return (w_oi.t() if self.transposed else w_oi).to(self.weight.dtype)

    def merged_weight(self) -> Tensor:
        """W' in storage layout and dtype; arithmetic in fp32 (fp64 for fp64 weights)."""
        dt = torch.promote_types(self.weight.dtype, torch.float32)
        w = self.weight_oi().detach().to(dt)
        return self._stored(self.variant.merged(w, self.bone_block.detach().to(dt)))

    def unmerged_weight(self) -> Tensor:
        """W from the merged weight (col/row invert I + B; raises when that is ill-conditioned)."""
        dt = torch.promote_types(self.weight.dtype, torch.float32)
        w = self.weight_oi().detach().to(dt)
        return self._stored(self.variant.unmerged(w, self.bone_block.detach().to(dt)))

    @torch.no_grad()
    def write_weight(self, w: Tensor) -> None:
        self.weight.copy_(w)

    def to_base(self) -> nn.Module:
        """A plain Linear/Conv1D sharing this layer's weight and bias (the adapter is dropped)."""
        if self.transposed:
            base = conv1d_class()(self.out_features, self.in_features)
        else:
            base = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        base.weight = self.weight
        base.bias = self.bias
        return base

    def extra_repr(self) -> str:
        mini = f", mini_r={self.mini_r}" if self.mini_r else ""
        return (
            f"in={self.in_features}, out={self.out_features}, variant={self.variant.name}, r={self.r}{mini}, "
            f"block={tuple(self.bone_block.shape)}, merged={self.merged}"
        )
