"""Fine-tuning methods, one registered object each (see `base.Method`).

`bone train` runs `METHODS[cfg.method]`; `load_adapter` gives an adapter (a folder or a
file) to the method that owns it. Adding a method: a class in a new file of this package and one entry below.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import AdapterError, ConfigError, MissingPathError
from .base import Method
from .bone import BoneMethod
from .full import FullMethod
from .peft_lora import DoraMethod, LoraMethod, PissaMethod

METHODS: dict[str, Method] = {m.name: m for m in (BoneMethod(), LoraMethod(), PissaMethod(), DoraMethod(), FullMethod())}


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {list(METHODS)}") from None


def owner(path: str | Path) -> Method:
    """The method whose saved result `path` holds: a folder, or a file such as an RWKV-PEFT `.pth`."""
    path = Path(path)
    if not path.exists():
        raise MissingPathError(f"adapter {path} does not exist (pass the adapter/ folder that bone train wrote, "
                               f"or an RWKV-PEFT .pth checkpoint)")
    for method in METHODS.values():
        if method.owns(path):
            return method
    if path.is_file():
        raise AdapterError(f"--adapter {path} is a file no method reads: pass the adapter folder that holds it "
                           f"({path.parent}, with adapter_config.json), or an RWKV-PEFT checkpoint (.pth)")
    present = sorted(p.name for p in path.iterdir())
    raise AdapterError(f"{path} is not an adapter folder any method reads (it holds {present[:8]})")


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """`model` with the adapter (or other saved result) in `path` applied, by the method that owns it."""
    return owner(path).load(model, Path(path))
