"""The kinds of frozen layer a Bone adapter can sit on, one class each.

A kind knows how to recognise its modules, read their `(out, in)` shape, present the weight in
`(out, in)` layout to the variant math and the kernels, and rebuild a plain module on unload.
Today: torch `nn.Linear` and transformers' `Conv1D` (GPT-2 family, weight stored `(in, out)`).
A new layer type (e.g. a quantized linear) is one more class here plus one entry in `KINDS`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class BaseKind:
    """Interface for one kind of frozen linear layer."""

    name: str
    transposed: bool = False  # the stored weight is (in, out)

    def matches(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def shape(self, module: nn.Module) -> tuple[int, int]:
        """(out_features, in_features)."""
        raise NotImplementedError

    def weight_oi(self, weight: Tensor) -> Tensor:
        """The stored weight in `(out, in)` layout (a view, no copy)."""
        return weight.t() if self.transposed else weight

    def stored(self, w_oi: Tensor, like: Tensor) -> Tensor:
        """An `(out, in)` tensor in the stored layout and dtype of `like` (the one cast)."""
        return (w_oi.t() if self.transposed else w_oi).to(like.dtype)

    def rebuild(self, weight: nn.Parameter, bias: nn.Parameter | None, out: int, in_: int) -> nn.Module:
        """A plain module of this kind around `weight` and `bias` (no copy)."""
        raise NotImplementedError


class LinearKind(BaseKind):
    name = "Linear"

    def matches(self, module):
        return isinstance(module, nn.Linear)

    def shape(self, module):
        return module.out_features, module.in_features

    def rebuild(self, weight, bias, out, in_):
        base = nn.Linear(in_, out, bias=bias is not None, device="meta")
        base.weight, base.bias = weight, bias
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

    def rebuild(self, weight, bias, out, in_):
        with torch.device("meta"):
            base = _conv1d_class()(out, in_)
        base.weight, base.bias = weight, bias
        return base


KINDS: list[BaseKind] = [LinearKind(), Conv1DKind()]


def kind_of(module: nn.Module) -> BaseKind | None:
    """The kind of `module`, or None when Bone cannot adapt it."""
    return next((k for k in KINDS if k.matches(module)), None)


def is_adaptable(module: nn.Module) -> bool:
    return kind_of(module) is not None


def shape_of(module: nn.Module) -> tuple[int, int]:
    """(out_features, in_features) of an adaptable module."""
    return kind_of(module).shape(module)
