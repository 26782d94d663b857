"""The Bone method: `bone.apply` with the run's `bone:` section (variant, r, targets, trained parts, ...).

It trains the blocks and the trained parts (`bone.train_parts`, at `optim.parts_lr` when set), saves
them as an adapter folder, and reads back those folders and RWKV-PEFT's `.pth` checkpoints.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .. import io, variants
from .. import parts as trained_parts
from ..bases import shape_of
from ..errors import AdapterError, ConfigError
from ..inject import apply, bone_layers, check_shapes, resolve_targets, trainable_parameters, unload
from ..merging import disabled, merge
from .base import Method, named_trainable

LOW_PRECISION = (torch.bfloat16, torch.float16)


def _deepspeed_launch() -> bool:
    """Under `accelerate launch` with DeepSpeed, whose optimizer steps float32 master copies."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")


class BoneMethod(Method):
    name = "bone"
    about = "Bone adapters (variant col / row / shard / mini, Flash-Bone kernels), optionally with trained parts"

    def label(self, cfg, model=None):
        parts = f" + parts {cfg.bone.train_parts}" if cfg.bone.train_parts else ""
        return f"Bone-{cfg.bone.variant} r={cfg.bone.r}{parts}"

    def count(self, model, cfg):
        b = cfg.bone
        names = resolve_targets(model, b)
        check_shapes(model, names, b)
        variant, total = variants.get(b.variant), 0
        for name in names:
            out, in_ = shape_of(model.get_submodule(name))
            total += math.prod(variant.block_shape(out, in_, b.r, b.mini_r))
        return total + sum(model.get_parameter(n).numel() for n in trained_parts.resolve(model, b.train_parts, names))

    def apply(self, model, cfg):
        model = apply(model, cfg.bone)
        low = [n for n, p in zip(trained_parts.names(model), trained_parts.parameters(model)) if p.dtype in LOW_PRECISION]
        if low and not _deepspeed_launch():
            dtype = model.get_parameter(low[0]).dtype
            raise ConfigError(
                f"bone.train_parts picks {len(low)} {dtype} parameter(s) (e.g. {low[0]}): AdamW updates of size optim.lr are "
                f"far below {dtype}'s resolution, so the trained parts would not change. Load the base in float32 "
                f"(model.dtype=float32) and train with schedule.precision=bf16 (autocast), or launch with DeepSpeed "
                f"(which keeps float32 master copies, as RWKV-PEFT's bf16 runs do)")
        return model

    def trainable(self, model):
        return named_trainable(model, trainable_parameters(model))

    def param_groups(self, model, cfg):
        names = [n for n, _ in self.trainable(model)]
        parts = set(trained_parts.names(model))
        if cfg.optim.parts_lr is None or not parts:
            return super().param_groups(model, cfg)
        return [([n for n in names if n not in parts], cfg.optim.lr), ([n for n in names if n in parts], cfg.optim.parts_lr)]

    def _layer_names(self, model: nn.Module) -> dict[str, str]:
        """{parameter name: layer name} of the active blocks, in training order."""
        layer_of = {id(layer.bone_block): name for name, layer in bone_layers(model) if layer.active is not None}
        return {n: layer_of[id(p)] for n, p in self.trainable(model) if id(p) in layer_of}

    def save(self, model, path, tensors=None):
        blocks = parts = None
        if tensors is not None:
            layer_of = self._layer_names(model)
            blocks = {layer_of[n]: t for n, t in tensors.items() if n in layer_of}
            parts = {n: t for n, t in tensors.items() if n not in layer_of}
        io.save(model, path, blocks=blocks, parts=parts)

    def read_trained(self, model, path):
        saved = io.read(path)
        layer_of = self._layer_names(model)
        part_names = set(trained_parts.names(model))
        for what, have, want in (("blocks", set(saved.blocks), set(layer_of.values())), ("trained parts", set(saved.parts), part_names)):
            if have != want:
                raise AdapterError(f"{path} does not fit this model ({what}): missing {sorted(want - have)[:4]}, "
                                   f"unexpected {sorted(have - want)[:4]}")
        return {**{param: saved.blocks[layer] for param, layer in layer_of.items()}, **{n: saved.parts[n] for n in part_names}}

    def owns(self, path: Path) -> bool:
        return io.is_adapter(path)

    def load(self, model, path):
        return io.load(model, path)

    def fold(self, model):
        if not any(layer.quantized for _, layer in bone_layers(model)):  # a quantized base is never requantized
            merge(model)  # generation then runs at base-model speed

    def merged(self, model):
        merge(model)
        return unload(model)

    def export_merged(self, base, adapter, dest):
        from ..models import family_of

        return family_of(base).merge_files(base, adapter, dest)  # streamed shard by shard, never the whole model

    def base_outputs(self, model):
        return disabled(model)  # a zero adapter adds nothing: skip its weight rebuild
