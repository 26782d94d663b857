"""The kinds of frozen layer a Bone adapter can sit on, one class each.

A kind knows how to recognise its modules, read their `(out, in)` shape, say why it cannot adapt
one (`problem`), make its modules safe to run under bone (`prepare`), present the weight to the
variant math and the kernels (`reader`: an `(out, in)` tensor, or a `bone.kernels.WeightRows`
for a quantized weight), and give the plain module back on unload (`rebuild`).
Here: torch `nn.Linear` and transformers' `Conv1D` (GPT-2 family, weight stored `(in, out)`);
bitsandbytes `Linear4bit` / `Linear8bitLt` live in `bone.quant.kinds` (they subclass nn.Linear,
so they come first in `KINDS`: the first match wins).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class BaseKind:
    """Interface for one kind of frozen linear layer."""

    name: str
    transposed: bool = False  # the stored weight is (in, out)
    quantized: bool = False  # the weight is stored quantized (read through a WeightRows; bone.merge refuses)

    def matches(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def shape(self, module: nn.Module) -> tuple[int, int]:
        """(out_features, in_features)."""
        raise NotImplementedError

    def problem(self, module: nn.Module) -> str | None:
        """Why bone cannot use this module (checked before anything changes), or None."""
        return None

    def prepare(self, module: nn.Module, adapted: bool) -> str | None:
        """Make a module of this kind safe to run under bone (`bone.apply` calls it for every module of
        this kind in the model; `adapted`: it is about to get an adapter). Returns a note for the
        user, or None."""
        return None

    def settings(self, module: nn.Module) -> Any:
        """Non-tensor facts a BoneLinear keeps about its frozen base (None for plain layers)."""
        return None

    def compute_dtype(self, layer: nn.Module) -> torch.dtype:
        """The dtype of the base product of a BoneLinear of this kind."""
        return layer.weight.dtype

    def reader(self, layer: nn.Module):
        """What the kernels read for a BoneLinear of this kind: W `(out, in)` (a view) or a WeightRows."""
        return self.weight_oi(layer.weight)

    def weight_oi(self, weight: Tensor) -> Tensor:
        """The stored weight in `(out, in)` layout (a view, no copy)."""
        return weight.t() if self.transposed else weight

    def stored(self, w_oi: Tensor, like: Tensor) -> Tensor:
        """An `(out, in)` tensor in the stored layout and dtype of `like` (the one cast)."""
        return (w_oi.t() if self.transposed else w_oi).to(like.dtype)

    def rebuild(self, layer: nn.Module) -> nn.Module:
        """A plain module of this kind around a BoneLinear's `weight` and `bias` (no copy)."""
        raise NotImplementedError


class LinearKind(BaseKind):
    name = "Linear"

    def matches(self, module):
        return isinstance(module, nn.Linear)

    def shape(self, module):
        return module.out_features, module.in_features

    def problem(self, module):
        if not module.weight.is_floating_point():
            return (f"its weight is {module.weight.dtype}, not floating point: a {type(module).__name__} quantized by a "
                    f"tool bone cannot read (bone reads bitsandbytes Linear4bit / Linear8bitLt)")
        return None

    def rebuild(self, layer):
        base = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        base.weight, base.bias = layer.weight, layer.bias
        return base


def _conv1d_class():
    """transformers' Conv1D, or None without transformers (the core works without it)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return None
    return Conv1D


class Conv1DKind(BaseKind):
    name = "Conv1D"
    transposed = True

    def matches(self, module):
        conv1d = _conv1d_class()
        return conv1d is not None and isinstance(module, conv1d)

    def shape(self, module):
        in_, out = module.weight.shape
        return out, in_

    def rebuild(self, layer):
        with torch.device("meta"):
            base = _conv1d_class()(layer.out_features, layer.in_features)
        base.weight, base.bias = layer.weight, layer.bias
        return base


KINDS: list[BaseKind] = []  # filled on first use (`kinds`): the quantized kinds subclass BaseKind


def kinds() -> list[BaseKind]:
    """Every known kind, quantized ones first (they are also nn.Linear, and the first match wins).
    Filled on first use so that importing `bone.quant.kinds` first (it imports this module) works."""
    if not KINDS:
        from .quant.kinds import Linear4bitKind, Linear8bitKind

        KINDS.extend([Linear4bitKind(), Linear8bitKind(), LinearKind(), Conv1DKind()])
    return KINDS


def kind_of(module: nn.Module) -> BaseKind | None:
    """The kind of `module`, or None when Bone cannot adapt it."""
    return next((k for k in kinds() if k.matches(module)), None)


def is_adaptable(module: nn.Module) -> bool:
    return kind_of(module) is not None


def shape_of(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of an adaptable module."""
    return kind_of(module).shape(module)


def prepare(model: nn.Module, adapted: set[str] = frozenset()) -> list[tuple[str, str]]:
    """Run every known module's `prepare` (`adapted`: the names about to get adapters); (name, note)
    for those that had something to say."""
    notes = []
    for name, module in model.named_modules():
        kind = kind_of(module)
        note = None if kind is None else kind.prepare(module, name in adapted)
        if note is not None:
            notes.append((name, note))
    return notes
