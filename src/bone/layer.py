"""BoneLinear: a frozen linear layer carrying named Bone adapters (`BoneAdapter`).

The layer keeps the original module's `weight` and `bias` Parameters under the same names, so a
model's state-dict keys do not change. Everything adapter-owned lives under `bone_adapters`
(`<layer>.bone_adapters.<name>.block`): that prefix drives freezing, saving and filtering.
A layer has at most one active adapter (the one its forward runs; None: the base product) and at
most one merged adapter (folded into `weight`); `bone.apply` / `bone.load` add the adapter named
"default" unless given a name, and `bone.use` switches between names (`bone.adapters`). Only the
active adapter's block requires grad (`set_active`).

Shapes: x `(..., in)`, weight `(out, in)` (Linear) or `(in, out)` (Conv1D), y `(..., out)`.
Casts happen once at the boundary: the variant function receives the base-dtype input and
`(out, in)` weight and the adapter-dtype block, and its result is cast back to the input's dtype.
A quantized base (bitsandbytes, `bone.quant`) stays quantized: `frozen()` gives the kernels a
`WeightRows` that dequantizes rows on demand, and merging refuses (see `bone.merging`).

Inference cache (`BoneConfig.cache_merged`): a forward without autograd (`torch.no_grad`,
`torch.inference_mode`) runs `x @ W_eff^T + bias` with the adapter's effective weight W_eff (its
merged weight in the dtype the adapter computes in), built once and kept in the adapter until
something it was built from may have changed. Its stamp is the version counter, storage address,
dtype, device and shape of the block and of the base weight: an optimizer step, `copy_`, a load,
a merge or unmerge (in-place writes to W), `.to()` all change it. The cache is dropped on any
forward with autograd on, on `train()`, on `.to()`/dtype/device moves, when another adapter of the
layer runs without autograd, and when the layer's weight is written (`write_weight`), so training
never holds it. Memory: one `(out, in)` tensor per adapted layer. Writes that bypass the version
counter (`p.data.copy_(t)`) are not seen: write under `torch.no_grad()` to the parameter itself,
or call `drop_cache()`. Blocks or weights made under inference mode have no version counter and
are never cached.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import bases, variants
from .config import BoneConfig
from .kernels.shard import dropout_p
from .kernels.weights import dense, frozen_linear, source, stamp

DEFAULT = "default"  # the adapter name of bone.apply / bone.load


class BoneAdapter(nn.Module):
    """One Bone adapter on one layer: its block (the only trainable tensor), config and forward."""

    def __init__(self, cfg: BoneConfig, out: int, in_: int, dtype: torch.dtype, device: torch.device):
        """dtype, device: the base's compute dtype (used when cfg.dtype is None) and device."""
        super().__init__()
        self.cfg = cfg
        self.variant = variants.get(cfg.variant)
        shape = self.variant.block_shape(out, in_, cfg.r, cfg.mini_r)
        self.block = nn.Parameter(torch.zeros(shape, dtype=cfg.torch_dtype or dtype, device=device))
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else None
        self.fn = self.variant.fused(cfg.chunk_size, cfg.keep_merged) if cfg.fused else self.variant.forward
        self._cache: tuple[tuple, Tensor] | None = None  # (stamp, W_eff) of the inference cache

    def forward(self, x: Tensor, w, bias: Tensor | None) -> Tensor:
        """x @ W'^T + bias in the adapter's compute dtype; w is the base weight `(out, in)` or a WeightRows."""
        if torch.is_grad_enabled():
            self._cache = None
        elif self._caches(w):
            weff = self._effective(w)
            return F.linear(x.to(weff.dtype), weff, None if bias is None else bias.to(weff.dtype))
        return self.fn(x, w, bias, self.block, self.dropout)

    # --- inference cache (see the module docstring) -------------------------------------------
    def _caches(self, w) -> bool:
        mode = self.cfg.cache_merged
        return ((mode is True or (mode == "auto" and isinstance(w, Tensor))) and dropout_p(self.dropout) == 0.0
                and not self.block.is_inference() and not source(w).is_inference())

    def _effective(self, w) -> Tensor:
        key = (stamp(self.block), stamp(source(w)))
        if self._cache is None or self._cache[0] != key:
            self._cache = None  # the stale weight goes before the new one is built
            dt = self.variant.out_dtype(w.dtype, self.block.dtype)
            self._cache = (key, self.merged(dense(w)).to(dt))
        return self._cache[1]

    def drop_cache(self) -> None:
        """Forget the inference cache (the next no-grad forward rebuilds it)."""
        self._cache = None

    def train(self, mode: bool = True) -> "BoneAdapter":
        if mode:
            self._cache = None
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self._cache = None
        return super()._apply(fn, recurse)

    def _fp32(self, w_oi: Tensor) -> tuple[Tensor, Tensor]:
        dt = torch.promote_types(w_oi.dtype, torch.float32)
        return w_oi.detach().to(dt), self.block.detach().to(dt)

    def merged(self, w_oi: Tensor) -> Tensor:
        """W' `(out, in)` in fp32 (fp64 for fp64 weights)."""
        return self.variant.merged(*self._fp32(w_oi))

    def unmerged(self, w_merged_oi: Tensor) -> Tensor:
        """W `(out, in)` in fp32 from W' (col/row invert I + B; raises when ill-conditioned)."""
        return self.variant.unmerged(*self._fp32(w_merged_oi))

    def extra_repr(self) -> str:
        mini = f", mini_r={self.cfg.mini_r}" if self.cfg.mini_r else ""
        return f"variant={self.variant.name}, r={self.cfg.r}{mini}, block={tuple(self.block.shape)}"


class BoneLinear(nn.Module):
    """A Linear/Conv1D (or bitsandbytes 4/8-bit linear) with Bone adapters; merged or disabled, it
    runs the base product only."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.kind = bases.kind_of(base)
        self.out_features, self.in_features = self.kind.shape(base)
        self.weight = base.weight
        self.bias = base.bias
        self.base_settings = self.kind.settings(base)  # a quantized base's module and compute dtype
        self.bone_adapters = nn.ModuleDict()
        self.active: str | None = None  # the adapter the forward runs
        self.merged_name: str | None = None  # the adapter folded into self.weight
        self.disabled = False  # bone.disabled(): behave as the base layer

    # --- adapters ---------------------------------------------------------------------------
    def add_adapter(self, name: str, cfg: BoneConfig) -> BoneAdapter:
        """A new zero-initialised adapter `name` (made active)."""
        adapter = BoneAdapter(cfg, self.out_features, self.in_features, self.kind.compute_dtype(self), self.weight.device)
        self.bone_adapters[name] = adapter
        self.set_active(name)
        return adapter

    def set_active(self, name: str | None) -> None:
        """Run adapter `name` from now on (None: the base product); only its block requires grad."""
        self.active = name
        for key, adapter in self.bone_adapters.items():
            adapter.block.requires_grad_(key == name)

    def remove_adapter(self, name: str) -> None:
        """Drop adapter `name`; the weight stays as it is (a merged adapter stays folded into it)."""
        del self.bone_adapters[name]
        if self.active == name:
            self.active = None
        if self.merged_name == name:
            self.merged_name = None

    def adapter(self, name: str | None = None) -> BoneAdapter:
        """The adapter `name` (default: the active one)."""
        return self.bone_adapters[name or self.active]

    @property
    def bone_block(self) -> nn.Parameter:
        """The active adapter's block."""
        return self.adapter().block

    @property
    def merged(self) -> bool:
        return self.merged_name is not None

    # --- computation ------------------------------------------------------------------------
    @property
    def transposed(self) -> bool:
        return self.kind.transposed

    @property
    def quantized(self) -> bool:
        """The base weight is stored quantized (bitsandbytes); it cannot take a merge."""
        return self.kind.quantized

    def weight_oi(self) -> Tensor:
        """The base weight in `(out, in)` layout (a view for Conv1D); plain bases only."""
        return self.kind.weight_oi(self.weight)

    def frozen(self):
        """What the kernels read: the `(out, in)` weight view, or a quantized base's WeightRows."""
        return self.kind.reader(self)

    def forward(self, x: Tensor) -> Tensor:
        if self.merged_name is not None or self.disabled or self.active is None:
            return frozen_linear(x, self.frozen(), self.bias).to(x.dtype)
        adapter = self.bone_adapters[self.active]
        if len(self.bone_adapters) > 1 and not torch.is_grad_enabled():  # one inference cache per layer
            for other in self.bone_adapters.values():
                if other is not adapter:
                    other.drop_cache()
        return adapter(x, self.frozen(), self.bias).to(x.dtype)

    def merged_weight(self, name: str | None = None) -> Tensor:
        """W' of adapter `name` (default: active) in storage layout and dtype; fp32 arithmetic."""
        return self.kind.stored(self.adapter(name).merged(self.weight_oi()), self.weight)

    def unmerged_weight(self) -> Tensor:
        """W from the current (merged) weight, in storage layout and dtype."""
        return self.kind.stored(self.adapter(self.merged_name).unmerged(self.weight_oi()), self.weight)

    @torch.no_grad()
    def write_weight(self, w: Tensor) -> None:
        for adapter in self.bone_adapters.values():
            adapter.drop_cache()
        self.weight.copy_(w)

    def to_base(self) -> nn.Module:
        """A plain module of the base kind sharing this layer's weight and bias (adapters dropped)."""
        return self.kind.rebuild(self)

    def rebase(self, weight: nn.Parameter) -> None:
        """Replace the frozen base by a plain `(out, in)` Linear weight (e.g. a quantized base's
        dequantized weight, `bone.quant.dequantize`); adapters are kept."""
        self.kind, self.base_settings = bases.LinearKind(), None
        self.weight = weight

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, base={self.kind.name}, "
                f"active={self.active}, merged={self.merged_name}")
