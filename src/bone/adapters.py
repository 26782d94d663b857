"""Named adapters on one model: which are loaded, which one runs, switching between them.

A model can carry several Bone adapters side by side (one per task, customer or language), each
under a name, on the same layers or on different ones:

    bone.load(model, "runs/sql/adapter", name="sql")      # bone.apply(model, cfg, name=...) alike
    bone.load(model, "runs/chat/adapter", name="chat")     # the adapter added last is the active one
    bone.use(model, "sql")                                 # every layer runs "sql" (or its base)
    with bone.using(model, "chat"): ...                    # "chat" inside the block, then back
    with bone.disabled(model): ...                         # the base model

One adapter is active at a time, model-wide (or none: `use(model, None)` runs the base model):
a layer runs the active adapter when it holds it and its base product when it does not.
Adapters do not stack: two adapters on one layer never run together. Only the active adapter's
blocks require grad, so an optimizer over `bone.trainable_parameters(model)` trains the active
adapter and nothing else; switching moves `requires_grad` with it. While an adapter is merged
into the weights (`bone.merge`), the model runs that one: switching to another, or adding one,
is refused until `bone.unmerge`. The single-adapter API (no names) is the adapter "default".
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

from torch import nn

from .errors import AdapterError, ConfigError, ModelError, UsageError
from .layer import BoneLinear

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")  # a name is a parameter-name component: no dots


def bone_layers(model: nn.Module) -> Iterator[tuple[str, BoneLinear]]:
    """(name, layer) for every Bone-adapted layer, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, BoneLinear):
            yield name, module


def require_layers(model: nn.Module) -> list[tuple[str, BoneLinear]]:
    layers = list(bone_layers(model))
    if not layers:
        raise ModelError("the model has no Bone adapters: call bone.apply(model, cfg) or bone.load(model, dir) first")
    return layers


def adapter_names(model: nn.Module) -> list[str]:
    """The names of the adapters the model carries, in the order they were added."""
    names: dict[str, None] = {}
    for _, layer in bone_layers(model):
        names.update(dict.fromkeys(layer.bone_adapters))
    return list(names)


def active_adapter(model: nn.Module) -> str | None:
    """The name of the adapter the model runs (None: none is active, or the model has none)."""
    found = {layer.active for _, layer in bone_layers(model)} - {None}
    if len(found) > 1:
        raise UsageError(f"the layers run different adapters {sorted(found)} (set on the layers by hand?): "
                         f"call bone.use(model, name) to choose one")
    return next(iter(found), None)


def merged_adapter(model: nn.Module) -> str | None:
    """The name of the adapter folded into the weights (bone.merge), or None."""
    return next((layer.merged_name for _, layer in bone_layers(model) if layer.merged_name is not None), None)


def _listing(names: list[str]) -> str:
    return ", ".join(map(repr, names)) if names else "none"


def require_known(model: nn.Module, name: str) -> None:
    """Raise AdapterError (one line listing the loaded names) unless the model has an adapter `name`."""
    names = adapter_names(model)
    if name not in names:
        raise AdapterError(f"no adapter named {name!r}; the model has: {_listing(names)}")


def resolve(model: nn.Module, name: str | None) -> str:
    """`name` checked, or the active adapter's name when None."""
    require_layers(model)
    if name is not None:
        require_known(model, name)
        return name
    active = active_adapter(model)
    if active is None:
        raise UsageError(f"no adapter is active (loaded: {_listing(adapter_names(model))}): pass name=..., "
                         f"or call bone.use(model, name) first")
    return active


def layers_with(model: nn.Module, name: str) -> list[tuple[str, BoneLinear]]:
    """(name, layer) of the layers that hold adapter `name`, in module order."""
    return [(n, layer) for n, layer in bone_layers(model) if name in layer.bone_adapters]


def check_name(name: str) -> None:
    """Raise ConfigError unless `name` can name an adapter (it becomes part of parameter names)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"adapter name {name!r} is not usable: use 1-64 letters, digits, '_' or '-' "
                          f"(no dots or spaces), e.g. 'sql' or 'step-200'")
    if hasattr(nn.ModuleDict(), name):
        raise ConfigError(f"adapter name {name!r} is taken by torch's module API; pick another, e.g. {name + '_a'!r}")


def activate(model: nn.Module, name: str | None) -> None:
    """Make `name` the active adapter of every layer that holds it; the others run their base."""
    for _, layer in bone_layers(model):
        layer.set_active(name if name in layer.bone_adapters else None)


def _check_switch(model: nn.Module, name: str | None) -> None:
    require_layers(model)
    if name is not None:
        require_known(model, name)
    merged = merged_adapter(model)
    if merged is not None and merged != name:
        raise UsageError(f"adapter {merged!r} is merged into the weights: call bone.unmerge(model) before switching "
                         f"to {'the base model' if name is None else repr(name)}")


def use(model: nn.Module, name: str | None) -> nn.Module:
    """Run adapter `name` from now on (None: no adapter, the base model); returns `model`.
    Only its blocks require grad afterwards. Unknown names change nothing."""
    _check_switch(model, name)
    activate(model, name)
    return model


@contextmanager
def using(model: nn.Module, name: str | None) -> Iterator[nn.Module]:
    """`use(model, name)` inside the block; each layer's previous active adapter comes back after."""
    _check_switch(model, name)
    before = [(layer, layer.active) for _, layer in bone_layers(model)]
    activate(model, name)
    try:
        yield model
    finally:
        for layer, active in before:
            layer.set_active(active if active in layer.bone_adapters else None)
