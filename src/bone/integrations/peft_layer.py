"""FlashMissLinear: PEFT's `MissLinear` with a forward that runs a Flash-Bone kernel.

`bone.flash` turns a planned `MissLinear` into this subclass in place (`layer.__class__`) and
gives it a `FlashPlan`; `bone.unflash` turns it back. Nothing else changes: the parameters, the
state dict, merge / unmerge, adapter management and `repr` are PEFT's own.

What PEFT 0.21's `MissLinear.forward` computes for its one active adapter (x `(..., in)`,
W `(out, in)`, block as stored):
  init_weights="bat" (bone col)   y = x W'^T + bias, W'[a,b] = W[a,b] + W[a,b] B[a] + B[a], in the
                                  dtype W + delta promotes to; no dropout on this branch
  True / False (shard), "mini"    y = base_layer(x) + sum_j dropout(x_j) @ M (x zero-padded to a
                                  multiple of r and cast to the block dtype first; mini's
                                  M = block.repeat(1, out // mini_r))
The kernels (`bone.kernels`) compute exactly that, with identical gradients wrt x and the block,
and draw a shard dropout mask with the same single `F.dropout(x)` call PEFT makes.

The forward takes the kernel only while the layer is as it was planned: the planned adapter is
the only active adapter with a block on this layer, adapters are enabled, nothing is merged,
PEFT's input dtype casting is on, the base weight and bias are frozen, and the dtypes still give
PEFT's arithmetic (see `FlashPlan.runs`). Otherwise it is PEFT's forward, unchanged: a switched,
disabled or merged layer behaves exactly as PEFT's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from peft.tuners.miss import MissLinear
from torch import Tensor

from ..kernels.shard import dropout_p
from ..variants import Variant
from .peft import exact_dtype, running_adapters


def _autocast(x: Tensor) -> bool:
    return torch.is_autocast_enabled(x.device.type)


@dataclass(frozen=True)
class FlashPlan:
    """What `bone.flash` decided for one layer."""

    adapter: str  # the adapter the kernel runs: the layer's one active MiSS adapter at flash time
    variant: Variant  # from PEFT's init_weights (`layer.miss_fn`)
    shape: tuple[int, ...]  # the block shape the plan was checked with
    fn: Callable[..., Tensor]  # variant.fused(chunk_size)

    def runs(self, layer: "FlashMissLinear", x: Tensor) -> bool:
        """Whether this call can take the kernel and give PEFT's result (cheap attribute checks)."""
        if layer.disable_adapters or layer.merged or running_adapters(layer) != [self.adapter]:
            return False
        if not layer.cast_input_dtype_enabled:
            return False
        base = layer.base_layer
        if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
            return False
        block = layer.miss_block[self.adapter]
        if tuple(block.shape) != self.shape or not exact_dtype(self.variant, base.weight, block):
            return False
        # PEFT draws the dropout mask on x cast to the block dtype, the kernel on the x it gets (see `input`)
        return x.dtype == block.dtype or _autocast(x) or not dropout_p(layer.miss_dropout[self.adapter])

    def input(self, x: Tensor, block: Tensor) -> Tensor:
        """x as the kernel takes it: under autocast, shard/mini get x in the block dtype as PEFT's
        input path does (dropout and slice sums in that dtype; autocast casts it back for the base
        product, so that is unchanged)."""
        if self.variant.has_input_path and x.dtype != block.dtype and _autocast(x):
            return x.to(block.dtype)
        return x


class FlashMissLinear(MissLinear):
    """A `MissLinear` flashed by `bone.flash`; `bone_flash` holds its `FlashPlan`."""

    bone_flash: FlashPlan

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        plan = self.bone_flash
        if args or kwargs or not plan.runs(self, x):
            return super().forward(x, *args, **kwargs)
        base, block = self.base_layer, self.miss_block[plan.adapter]
        y = plan.fn(plan.input(x, block), base.weight, base.bias, block, self.miss_dropout[plan.adapter])
        return y.to(x.dtype)
