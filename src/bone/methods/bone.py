"""The Bone method: `bone.apply` with the run's `bone:` section (variant, r, targets, ...)."""
from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from .. import io, variants
from ..bases import shape_of
from ..errors import AdapterError
from ..inject import apply, bone_layers, check_shapes, resolve_targets, trainable_parameters, unload
from ..merging import disabled, merge
from .base import Method, named_trainable


class BoneMethod(Method):
    name = "bone"
    about = "Bone adapters (variant col / row / shard / mini, Flash-Bone kernels)"

    def label(self, cfg, model=None):
        return f"Bone-{cfg.bone.variant} r={cfg.bone.r}"

    def count(self, model, cfg):
        b = cfg.bone
        names = resolve_targets(model, b)
        check_shapes(model, names, b)
        variant, total = variants.get(b.variant), 0
        for name in names:
            out, in_ = shape_of(model.get_submodule(name))
            total += math.prod(variant.block_shape(out, in_, b.r, b.mini_r))
        return total

    def apply(self, model, cfg):
        return apply(model, cfg.bone)

    def trainable(self, model):
        return named_trainable(model, trainable_parameters(model))

    def _layer_names(self, model: nn.Module) -> dict[str, str]:
        """{parameter name: layer name} of the active blocks, in training order."""
        layer_of = {id(layer.bone_block): name for name, layer in bone_layers(model)}
        return {n: layer_of[id(p)] for n, p in self.trainable(model)}

    def save(self, model, path, tensors=None):
        blocks = None
        if tensors is not None:
            layer_of = self._layer_names(model)
            blocks = {layer_of[n]: t for n, t in tensors.items()}
        io.save(model, path, blocks=blocks)

    def read_trained(self, model, path):
        _, blocks, _ = io.read_adapter(path)
        layer_of = self._layer_names(model)
        if set(blocks) != set(layer_of.values()):
            missing, extra = sorted(set(layer_of.values()) - set(blocks)), sorted(set(blocks) - set(layer_of.values()))
            raise AdapterError(f"{path} does not fit this model: missing {missing[:4]}, unexpected {extra[:4]}")
        return {param: blocks[layer] for param, layer in layer_of.items()}

    def owns(self, path: Path) -> bool:
        return io.is_adapter_dir(path)

    def load(self, model, path):
        return io.load(model, path)

    def fold(self, model):
        merge(model)  # generation then runs at base-model speed

    def merged(self, model):
        merge(model)
        return unload(model)

    def export_merged(self, base, adapter, dest):
        from ..models import family_of

        return family_of(base).merge_files(base, adapter, dest)  # streamed shard by shard, never the whole model

    def base_outputs(self, model):
        return disabled(model)  # a zero adapter adds nothing: skip its weight rebuild
