"""`bone.flash` / `bone.unflash`: Flash-Bone kernels inside a Hugging Face PEFT MiSS model.

    model = get_peft_model(base, MissConfig(r=64, init_weights="bat"))  # or PeftModel.from_pretrained
    bone.flash(model)      # every MiSS layer PEFT would run as bone col / shard / mini runs Flash-Bone
    trainer.train()        # save_pretrained, merge_and_unload, disable_adapter, ... stay PEFT's
    bone.unflash(model)    # back to PEFT's own forward

`flash` plans every PEFT MiSS layer, then swaps the planned ones for `FlashMissLinear` (see
`peft_layer.py` for what the forward computes and when it falls back to PEFT's). A layer it
cannot take keeps PEFT's forward, and one warning names those layers with the reason:
an unverified PEFT version, a MiSS layer that is not PEFT 0.21's `MissLinear` layout, a
quantized base layer, several (or no) active adapters, a block that does not fit its variant,
an adapter dtype whose arithmetic the kernels do not reproduce, or a trainable base weight/bias.
`flash` on a flashed model plans afresh (after switching adapters, for example).
"""
from __future__ import annotations

import inspect
import sys
import warnings

import torch
from torch import Tensor, nn

from .. import variants
from ..config import BoneConfig
from ..errors import UsageError, require
from ..variants import Variant

VERIFIED = ((0, 21),)  # PEFT (major, minor) releases whose MissLinear the flash tests were run against
_LAYOUT = ("base_layer", "miss_block", "miss_dropout", "miss_r", "miss_mini_r", "miss_fn", "quantization_backend",
           "cast_input_dtype_enabled", "merged", "disable_adapters", "active_adapters")
_FORWARD_PARAMS = ["self", "x", "args", "kwargs"]
_SHOWN = 6  # layer names shown per reason in the warning


def _peft():
    return require("peft", "pip install peft", "bone.flash")


def peft_version_verified(version: str) -> bool:
    """Whether PEFT `version` (e.g. "0.21.2") is one whose MiSS layer flash was verified against."""
    from packaging.version import Version

    v = Version(version)
    return (v.major, v.minor) in VERIFIED


def peft_problem(version: str) -> str | None:
    """Why the installed PEFT (`version`) is not one flash relies on, or None: the release must be
    verified and its MissLinear.forward must take (x, *args, **kwargs)."""
    from peft.tuners.miss import MissLinear

    if not peft_version_verified(version):
        return f"PEFT {version} is not a version bone.flash was verified with ({', '.join(f'{a}.{b}.x' for a, b in VERIFIED)})"
    params = list(inspect.signature(MissLinear.forward).parameters)
    if params != _FORWARD_PARAMS:
        return f"PEFT's MissLinear.forward takes {params}, not {_FORWARD_PARAMS}"
    return None


def running_adapters(layer: nn.Module) -> list[str]:
    """The adapters PEFT's MiSS forward runs on `layer`: the active ones that have a block here."""
    return [a for a in layer.active_adapters if a in layer.miss_block]


def exact_dtype(variant: Variant, w: Tensor, block: Tensor) -> bool:
    """Whether the kernel's arithmetic is PEFT's for these dtypes: the kernels compute col in the
    block dtype, PEFT's bat branch in the dtype W + delta promotes to (the input path of
    shard/mini runs in the block dtype in both)."""
    return variant.has_input_path or torch.promote_types(w.dtype, block.dtype) == block.dtype


def _flash_class():
    """FlashMissLinear when its module was imported (no layer can be flashed before), else None."""
    module = sys.modules.get(f"{__package__}.peft_layer")
    return None if module is None else module.FlashMissLinear


def is_flashed(layer: nn.Module) -> bool:
    cls = _flash_class()
    return cls is not None and type(layer) is cls


def layout_problem(layer: nn.Module) -> str | None:
    """Why `layer` is not a MiSS layer laid out as flash relies on (PEFT 0.21's MissLinear), or None."""
    from peft.tuners.miss import MissLinear

    if type(layer) is not MissLinear and not is_flashed(layer):
        return f"class {type(layer).__name__} is not PEFT's MissLinear"
    missing = [a for a in _LAYOUT if not hasattr(layer, a)]
    return f"MissLinear layout differs (no {missing})" if missing else None


def _plan(layer: nn.Module, chunk_size: int):
    """A FlashPlan for one MiSS layer, or the reason (a short phrase) it keeps PEFT's forward."""
    from .peft_layer import FlashPlan

    problem = layout_problem(layer)
    if problem is not None:
        return problem
    base = layer.base_layer
    if layer.quantization_backend is not None or not isinstance(base, nn.Linear) or not base.weight.is_floating_point():
        return "quantized or non-Linear base layer"
    active = running_adapters(layer)
    if len(active) != 1:
        return "several active MiSS adapters" if active else "no active MiSS adapter"
    name = active[0]
    variant = variants.from_peft("MISS", layer.miss_fn)
    if variant is None:
        return f"unknown init_weights={layer.miss_fn!r}"
    block, r, mini_r = layer.miss_block[name], layer.miss_r[name], layer.miss_mini_r[name]
    out, in_ = base.out_features, base.in_features
    mini_r = mini_r if variant.uses_mini_r else None
    if variant.check(out, in_, r, mini_r) is not None or tuple(block.shape) != variant.block_shape(out, in_, r, mini_r):
        return "block shape does not fit its variant"
    if not exact_dtype(variant, base.weight, block):
        return "bat adapter dtype narrower than the base weight (PEFT computes in the wider one)"
    dropout = layer.miss_dropout[name]
    if not isinstance(dropout, (nn.Dropout, nn.Identity)):
        return f"dropout module {type(dropout).__name__}"
    if isinstance(dropout, nn.Dropout) and dropout.p > 0 and (in_ % r or block.dtype != base.weight.dtype):
        return "miss_dropout with in_features % r != 0 or adapter dtype != base dtype (PEFT's mask differs)"
    if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
        return "trainable base weight or bias"
    return FlashPlan(name, variant, tuple(block.shape), variant.fused(chunk_size))


def _miss_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.miss import MissLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, MissLayer)]


def _warn(skipped: dict[str, list[str]], total: int) -> None:
    if not skipped:
        return
    n = sum(len(v) for v in skipped.values())
    parts = [f"{why}: {', '.join(names[:_SHOWN])}" + (f" (+{len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")
             for why, names in skipped.items()]
    warnings.warn(f"bone.flash: {n} of {total} PEFT MiSS layer(s) keep PEFT's own forward: " + "; ".join(parts),
                  UserWarning, stacklevel=3)


def flash(model: nn.Module, *, chunk_size: int = BoneConfig.chunk_size) -> nn.Module:
    """Run every PEFT MiSS layer of `model` that flash can take on the Flash-Bone kernels; returns `model`.

    chunk_size: output rows of any weight-sized temporary the kernels build at once (as BoneConfig)."""
    peft = _peft()
    if not isinstance(model, nn.Module):
        raise UsageError(f"bone.flash takes a PEFT model (torch.nn.Module), got {type(model).__name__}")
    layers = _miss_layers(model)
    if not layers:
        raise UsageError(f"bone.flash found no PEFT MiSS layer in this {type(model).__name__}: build it with "
                         "peft.get_peft_model(model, MissConfig(...)) or PeftModel.from_pretrained; "
                         "models from bone.apply / bone.load run Flash-Bone already")
    variants.get("col").fused(chunk_size)  # a bad chunk_size raises ConfigError before any layer changes
    problem = peft_problem(peft.__version__)
    plans = {name: problem or _plan(layer, chunk_size) for name, layer in layers}
    from .peft_layer import FlashMissLinear, FlashPlan

    skipped: dict[str, list[str]] = {}
    for name, layer in layers:
        plan = plans[name]
        _restore(layer)
        if isinstance(plan, FlashPlan):
            layer.__class__ = FlashMissLinear
            layer.bone_flash = plan
        else:
            skipped.setdefault(plan, []).append(name)
    _warn(skipped, len(layers))
    return model


def _restore(layer: nn.Module) -> None:
    if is_flashed(layer):
        layer.__class__ = type(layer).__base__  # PEFT's MissLinear
        del layer.bone_flash


def unflash(model: nn.Module) -> nn.Module:
    """Give every layer `bone.flash` changed back PEFT's own forward; returns `model` (a no-op when none)."""
    if not isinstance(model, nn.Module):
        raise UsageError(f"bone.unflash takes a PEFT model (torch.nn.Module), got {type(model).__name__}")
    for _, layer in model.named_modules():
        _restore(layer)
    return model


def flashed_layers(model: nn.Module) -> list[str]:
    """Names of the layers that currently run Flash-Bone through `bone.flash`."""
    return [n for n, m in model.named_modules() if is_flashed(m)]
