"""Merging adapters into weights: in place on a model, or as a pure function on a state dict.

All arithmetic is fp32 (fp64 for col/row inverses) with one cast back to the weight's dtype.
`merge(model, safe=True)` computes and checks every merged weight before writing any, so a broken
adapter (NaN/inf) leaves the model exactly as it was. With several named adapters (`bone.adapters`)
merge folds one of them (default: the active one) and the others stay as they are; one adapter
at a time can be merged. `unmerge` checks that every col/row block's
`I + B` is invertible before it writes anything. A quantized base (bitsandbytes) is refused:
requantizing W' would round most of the adapter's update away (see `QUANTIZED_MERGE`).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from . import parts as trained_parts
from . import variants
from .adapters import activate, layers_with, merged_adapter, require_layers, resolve
from .config import BoneConfig
from .errors import AdapterError, ModelError, UsageError


QUANTIZED_MERGE = (
    "bone.merge does not requantize: rounding W' back to 4/8 bits would lose most of the adapter's update. "
    "Merge into a full-precision copy of the base (bone merge --base <full-precision model> --adapter <dir>), or into "
    "the dequantized weights the adapter was trained against (bone.quant.dequantize(model), then bone.merge(model))"
)


def merge(model: nn.Module, safe: bool = False, name: str | None = None) -> nn.Module:
    """Fold adapter `name` (default: the active one) into its layers' base weights (in place); it
    becomes the active adapter. Layers already merged are skipped. Refuses (before any change) when
    another adapter is merged, or a base is quantized (see `QUANTIZED_MERGE`)."""
    name = resolve(model, name)
    merged = merged_adapter(model)
    if merged not in (None, name):
        raise UsageError(f"adapter {merged!r} is merged already (one adapter at a time): call bone.unmerge(model) "
                         f"before merging {name!r}")
    quantized = [n for n, layer in layers_with(model, name) if layer.quantized]
    if quantized:
        raise ModelError(f"{len(quantized)} adapted layer(s) have a quantized base (e.g. {quantized[0]}): {QUANTIZED_MERGE}")
    layers = [(n, layer) for n, layer in layers_with(model, name) if not layer.merged]
    if safe:
        for target, layer in layers:
            if not torch.isfinite(layer.merged_weight(name)).all():
                raise AdapterError(f"merging {target} gives non-finite weights: the adapter is broken; nothing was changed")
    activate(model, name)
    for _, layer in layers:
        layer.write_weight(layer.merged_weight())
        layer.merged_name = name
    return model


def unmerge(model: nn.Module, name: str | None = None) -> nn.Module:
    """Restore the base weights of merged layers (in place). name: the adapter expected to be merged
    (refused when another one is). Raises before writing if any col/row block's I + B is singular or
    ill-conditioned."""
    layers = [(n, layer) for n, layer in require_layers(model) if layer.merged]
    if name is not None:
        resolve(model, name)
        merged = merged_adapter(model)
        if merged not in (None, name):
            raise UsageError(f"adapter {name!r} is not merged ({merged!r} is): call bone.unmerge(model) to unmerge it")
    for target, layer in layers:
        adapter = layer.adapter(layer.merged_name)
        if adapter.variant.needs_inverse:
            try:
                variants.inverse_blocks(adapter.block)
            except AdapterError as err:
                raise AdapterError(f"cannot unmerge {target}: {err}") from None
    for _, layer in layers:
        layer.write_weight(layer.unmerged_weight())
        layer.merged_name = None
    rounded = [n for n, layer in layers if layer.weight.dtype in (torch.bfloat16, torch.float16)]
    if rounded:
        warnings.warn(
            f"unmerged {len(rounded)} {layers[0][1].weight.dtype} layer(s) (e.g. {rounded[0]}): the merged weights were "
            f"rounded to 16 bits, so the restored base weights are now approximate (up to ~1e-2 off). To get the base "
            f"back exactly, reload it (bone.load_model) instead of unmerging.", stacklevel=2)
    return model


@contextmanager
def disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every Bone layer behaves as its base layer and the trained parts hold their
    original values (the trained ones come back after)."""
    layers = require_layers(model)
    merged = [n for n, layer in layers if layer.merged]
    if merged:
        raise UsageError(f"adapters are merged into the weights ({merged[0]}, ...); call bone.unmerge(model) first")
    for _, layer in layers:
        layer.disabled = True
    try:
        with trained_parts.originals(model):
            yield model
    finally:
        for _, layer in layers:
            layer.disabled = False


def merge_weight(weight: Tensor, block: Tensor, variant: str, transposed: bool = False) -> Tensor:
    """W' for one weight: `(out, in)` (or `(in, out)` when transposed), same dtype as `weight`."""
    dt = torch.promote_types(weight.dtype, torch.float32)
    w = weight.to(dt)
    w = w.t() if transposed else w
    new = variants.get(variant).merged(w, block.to(dt))
    return (new.t() if transposed else new).contiguous().to(weight.dtype)


def merge_state_dict(
    state_dict: Mapping[str, Tensor],
    cfg: BoneConfig,
    blocks: Mapping[str, Tensor],
    transposed: Iterable[str] = (),
    parts: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """A new state dict with each `<module>.weight` in `blocks` merged and each trained part copied
    in (cast to the stored dtype); other entries are shared.

    `blocks` maps module names to adapter blocks (as `bone.read_adapter` returns); `transposed` names
    Conv1D modules whose weight is stored `(in, out)`; `parts` maps state-dict keys to trained values
    (bone.parts). Pure: the input is not modified."""
    transposed = set(transposed)
    parts = dict(parts or {})
    absent = sorted(k for k in parts if k not in state_dict)
    if absent:
        raise AdapterError(f"the adapter trains part(s) {absent[:4]} that the state dict does not have: "
                           f"the adapter was made for a different base model")
    both = sorted(k for k in parts if k[: -len(".weight")] in blocks and k.endswith(".weight"))
    if both:
        raise AdapterError(f"the adapter holds both a block and a trained value for {both[0]}: a layer is either "
                           f"adapted or trained in full, not both")
    variant = variants.get(cfg.variant)
    out = dict(state_dict)
    for name, block in blocks.items():
        key = f"{name}.weight"
        if key not in state_dict:
            raise AdapterError(f"adapter module {name!r} has no weight {key!r} in the state dict")
        w = state_dict[key]
        o, i = (w.shape[1], w.shape[0]) if name in transposed else tuple(w.shape)
        why = variant.check(o, i, cfg.r, cfg.mini_r)
        if why is not None:
            raise AdapterError(f"cannot merge into {key} {tuple(w.shape)}: variant {cfg.variant!r} {why}")
        expected = variant.block_shape(o, i, cfg.r, cfg.mini_r)
        if tuple(block.shape) != tuple(expected):
            raise AdapterError(
                f"adapter block for {name} has shape {tuple(block.shape)} but weight {key} {tuple(w.shape)} "
                f"needs {tuple(expected)} for variant {cfg.variant!r}, r={cfg.r}"
            )
        out[key] = merge_weight(w, block, cfg.variant, name in transposed)
    for key, value in parts.items():
        out[key] = trained_parts.merged_value(key, state_dict[key], value)
    return out
