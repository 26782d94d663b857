"""Writing adapters out for other tools: one `ExportTarget` per format (see `target.py`).

    bone merge  --base M --adapter DIR --out OUT          (the `merged` target)
    bone export --to TARGET --adapter DIR --out OUT [--base M] [target options]
    bone export --to rwkv-peft --adapter DIR --out FILE.pth      (RWKV-PEFT's checkpoint, `rwkv_peft.py`)
"""
from __future__ import annotations

from ..errors import ConfigError
from .lora import LoraTarget
from .merged import MergedTarget, merge, probe_difference
from .rwkv_peft import RWKVPeftTarget
from .target import ExportTarget, check_paths

TARGETS: dict[str, ExportTarget] = {t.name: t for t in (MergedTarget(), LoraTarget(), RWKVPeftTarget())}


def get(name: str) -> ExportTarget:
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown export target {name!r}; choose one of {list(TARGETS)}") from None


__all__ = ["ExportTarget", "TARGETS", "check_paths", "get", "merge", "probe_difference"]
