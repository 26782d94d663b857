"""Package namespaces whose names are imported on first use (PEP 562), so that `import bone` and the
`bone` command's `--help` do not import torch.

    _WHERE = {"name": "module", ...}          # None: the name is a submodule itself
    __getattr__, __dir__ = lazy.names(__name__, _WHERE, globals())
"""
from __future__ import annotations

from importlib import import_module
from typing import Callable


def names(package: str, where: dict[str, str | None], namespace: dict) -> tuple[Callable, Callable]:
    """(__getattr__, __dir__) for `package`: `where` maps each lazy name to the submodule defining it."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if where[name] is None:
            return import_module(f".{name}", package)
        return getattr(import_module(f".{where[name]}", package), name)

    def __dir__() -> list[str]:
        return sorted([*namespace, *where])

    return __getattr__, __dir__
