"""ExportTarget: one way of writing a trained adapter out for another tool.

`bone export --to NAME` and `bone merge` (the `merged` target) look targets up in
`bone.export.TARGETS`; a new target (a serving format, another trainer's file layout) is one
class in one file of this package plus one entry there. Targets validate everything before they
write, build their output under a temporary name and rename it into place.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from ..config import BoneConfig
from ..errors import ConfigError, OutputExistsError


class ExportTarget:
    """Interface for one export target."""

    name: str
    about: str  # one line for `bone export --help`
    needs_base: bool = False  # --base (the base model) is required

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Target-specific options of `bone export`."""

    def check(self, cfg: BoneConfig) -> str | None:
        """Why an adapter with this config cannot be written to this target (with what to do), or None."""
        return None

    def export(self, adapter: Path, out: Path, *, base: Path | None, options: argparse.Namespace,
               overwrite: bool, log: Callable[[str], None]) -> Path:
        """Write `out` from the adapter folder `adapter` (and `base` when needed); returns `out`."""
        raise NotImplementedError


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def check_paths(inputs: list[Path], out: Path, overwrite: bool) -> None:
    """Refuse an output that is, contains or lies inside an input, or that exists (without overwrite)."""
    o = out.resolve()
    for p in inputs:
        r = p.resolve()
        if _inside(o, r) or _inside(r, o):
            raise ConfigError(f"--out {out} overlaps the input {p}: bone never writes over or inside its inputs")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"--out {out} already exists: choose a new path or pass --overwrite to replace it")
