"""bitsandbytes `Linear4bit` (nf4 / fp4, with or without double quantization) and `Linear8bitLt`
(LLM.int8) as `bone.bases.BaseKind`s: the base stays quantized and frozen, the kernels read it
through `bone.quant.rows`.

Matching imports nothing: a bitsandbytes layer exists only once bitsandbytes has been imported.
`prepare` (run by `bone.apply` on every such layer of the model, adapted or not) keeps
bitsandbytes from repacking 4-bit weights for its CPU inference kernel and puts back a weight it
already repacked (`bone.quant.packing`). A BoneLinear keeps the original module (`QuantBase`) and
hands it back, around the same weight and bias, on unload.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..bases import BaseKind
from ..errors import UsageError
from . import packing
from .bnb import loaded
from .rows import Bnb4bitRows, Bnb8bitRows, exact_matmul

QUANT_TYPES = ("nf4", "fp4")
NESTED_BLOCK = 256


@dataclass
class QuantBase:
    """What a BoneLinear keeps about its quantized base besides `weight` and `bias`."""

    module: nn.Module  # the original bitsandbytes layer
    compute_dtype: torch.dtype  # dtype of its base product (and of blocks made with BoneConfig(dtype=None))
    threshold: float = 0.0  # int8: LLM.int8 outlier threshold


class _QuantKind(BaseKind):
    quantized = True

    def shape(self, module):
        return module.out_features, module.in_features

    def compute_dtype(self, layer):
        return layer.base_settings.compute_dtype

    def weight_oi(self, weight):
        raise UsageError("a quantized base has no plain (out, in) weight: read it through layer.frozen() (dequantized "
                         "row chunks), or call bone.quant.dequantize(model) first")

    def reader(self, layer):
        return self.rows(layer.weight, layer.base_settings, layer.training)

    def rows_of(self, module: nn.Module):
        """The WeightRows of a bitsandbytes module itself (not wrapped in a BoneLinear)."""
        return self.rows(module.weight, self.settings(module), module.training)

    def rows(self, weight, settings: QuantBase, training: bool):
        raise NotImplementedError

    def rebuild(self, layer):
        module = layer.base_settings.module
        module.weight, module.bias = layer.weight, layer.bias
        return module


class Linear4bitKind(_QuantKind):
    name = "Linear4bit"

    def matches(self, module):
        bnb = loaded()
        return bnb is not None and isinstance(module, bnb.nn.Linear4bit)

    def problem(self, module):
        qs = getattr(module.weight, "quant_state", None)
        if qs is None:
            return "its weight is not quantized yet (bitsandbytes quantizes a Linear4bit when it is moved with .to(device))"
        if qs.quant_type not in QUANT_TYPES:
            return f"4-bit quant_type {qs.quant_type!r} is not one bone reads ({', '.join(QUANT_TYPES)})"
        if tuple(qs.shape) != (module.out_features, module.in_features):
            return (f"its quantization state describes a {tuple(qs.shape)} weight, not (out, in) = "
                    f"{(module.out_features, module.in_features)} (a weight quantized in another orientation)")
        if packing.is_repacked(module.weight):
            return packing.problem(module.weight)
        if qs.nested and qs.state2.blocksize != NESTED_BLOCK:
            return f"its double-quantized scales use blocks of {qs.state2.blocksize}, bone reads {NESTED_BLOCK}"
        return None

    def prepare(self, module, adapted):
        weight = module.weight
        if getattr(weight, "quant_state", None) is None:
            return None
        if packing.is_repacked(weight) and packing.problem(weight) is None:
            packing.restore(weight)
        module.support_avx512bf16_for_cpu = False  # bitsandbytes' switch for the CPU repacking
        qs = weight.quant_state
        if weight.device.type != "cpu" or exact_matmul(tuple(qs.shape), qs.blocksize):
            return None
        why = (f"in_features={module.in_features} is not a multiple of the 4-bit blocksize {qs.blocksize}, and "
               f"bitsandbytes' CPU 4-bit matmul is wrong for such layers")
        if adapted:
            return why + ": bone computes this adapted layer by its own exact dequantization instead"
        return why + ": adapt it too, or keep it in full precision (bone.load_model(..., quantize=...) does)"

    def settings(self, module):
        return QuantBase(module, module.compute_dtype or module.weight.quant_state.dtype)

    def rows(self, weight, settings, training):
        return Bnb4bitRows(weight, settings.compute_dtype)


class Linear8bitKind(_QuantKind):
    name = "Linear8bitLt"

    def matches(self, module):
        bnb = loaded()
        return bnb is not None and isinstance(module, bnb.nn.Linear8bitLt)

    @staticmethod
    def _scb(module):
        scb = getattr(module.weight, "SCB", None)
        return module.state.SCB if scb is None else scb

    def problem(self, module):
        if module.state.has_fp16_weights or module.weight.dtype != torch.int8:
            return (f"it keeps {module.weight.dtype} weights (has_fp16_weights=True), not int8 ones; "
                    f"bone adapts Linear8bitLt layers quantized with has_fp16_weights=False")
        if self._scb(module) is None:
            return "its int8 weight has no row scales (SCB): not quantized yet (move it with .to(device))"
        return None

    def settings(self, module):
        dtype = getattr(module, "compute_dtype", None) or (module.bias.dtype if module.bias is not None else torch.float32)
        return QuantBase(module, dtype, float(module.state.threshold))

    def rows(self, weight, settings, training):
        return Bnb8bitRows(weight, self._scb(settings.module), settings.compute_dtype, settings.threshold, training)
