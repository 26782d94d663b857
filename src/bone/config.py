"""BoneConfig: the one dataclass that describes an adapter.

A config round-trips through JSON (`to_dict` / `from_dict`) and is validated on construction, so
a bad value fails where it is written rather than deep inside `apply`.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16", "float16", "float64")  # dtype names a config may give (torch's own names)


def to_torch_dtype(name: str) -> torch.dtype:
    """The torch dtype named `name` (one of DTYPES). torch is imported here, not with this module,
    so reading configs (and `--help`) stays free of it."""
    import torch

    return getattr(torch, name)


@dataclass
class BoneConfig:
    r: int = 64  # block size: col/row train (out/r or in/r) r x r blocks, shard/mini an r-row shard
    variant: str = "col"  # "col" (seed's Bone-col, PEFT bat), "row", "shard" (MiSS default), "mini" (see bone.variants)
    mini_r: int | None = None  # mini only: columns of the shared shard; must divide every target's out
    target_modules: list[str] | str | None = None  # name suffixes, a full-match regex, "all-linear", or None = per-architecture default
    exclude_modules: list[str] | str | None = None  # same forms as target_modules; matches are never adapted
    train_parts: list[str] | str | None = None  # base parameters trained in full beside the blocks: substrings of parameter names (RWKV-PEFT's time, ln, emb, head) or one regex matching whole names (see bone.parts)
    dropout: float = 0.0  # shard/mini only: dropout on the adapter's input path (PEFT miss_dropout)
    dtype: str | None = "float32"  # adapter parameter and compute dtype; None = each base weight's dtype
    fused: bool = True  # Flash-Bone autograd functions (frugal memory); False = plain autograd reference
    chunk_size: int = 4096  # fused path: output rows of any weight-sized temporary (col W', a dtype-cast W, shard W + dW)
    cache_merged: bool | str = "auto"  # forwards without autograd (eval, generate) reuse the effective weight, built once per layer until the block or base changes (one (out, in) weight per adapted layer); "auto" = plain bases only (a quantized base would be held dequantized), True = quantized too, False = rebuild every call
    keep_merged: bool | str = False  # fused col/shard/mini: keep the W' built in forward for backward (one (out, in) tensor per layer until its backward) instead of rebuilding it; False = never (least memory), True = always, "auto" = calls of at most 16 r tokens (shard/mini: and at least 4 r)

    def __post_init__(self) -> None:
        from . import variants

        if self.variant not in variants.VARIANTS:
            raise ConfigError(f"BoneConfig.variant={self.variant!r} is not one of {list(variants.VARIANTS)}")
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ConfigError(f"BoneConfig.r must be a positive int, got {self.r!r}")
        if self.mini_r is not None and (not isinstance(self.mini_r, int) or isinstance(self.mini_r, bool) or self.mini_r <= 0):
            raise ConfigError(f"BoneConfig.mini_r must be a positive int, got {self.mini_r!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"BoneConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("keep_merged", "cache_merged"):
            if not (isinstance(getattr(self, name), bool) or getattr(self, name) == "auto"):
                raise ConfigError(f"BoneConfig.{name} must be true, false or 'auto', got {getattr(self, name)!r}")
        why = variants.get(self.variant).validate(self.r, self.mini_r, self.dropout, self.keep_merged)
        if why is not None:
            raise ConfigError(why)
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"BoneConfig.dtype={self.dtype!r}; use one of {sorted(DTYPES)} or None")
        if not isinstance(self.chunk_size, int) or isinstance(self.chunk_size, bool) or self.chunk_size <= 0:
            raise ConfigError(f"BoneConfig.chunk_size must be a positive int, got {self.chunk_size!r}")
        for name in ("target_modules", "exclude_modules", "train_parts"):
            value = getattr(self, name)
            if isinstance(value, (tuple, set)):
                setattr(self, name, sorted(value))
            elif value is not None and not isinstance(value, (list, str)):
                raise ConfigError(f"BoneConfig.{name} must be a list of names, a regex string or None, got {value!r}")
        self._check_parts()

    def _check_parts(self) -> None:
        """train_parts: non-empty strings, or a regex that compiles."""
        parts = self.train_parts
        if isinstance(parts, str):
            try:
                re.compile(parts)
            except re.error as err:
                raise ConfigError(f"BoneConfig.train_parts={parts!r} is not a valid regex ({err}); "
                                  f"use a list of name substrings such as ['time', 'ln']") from None
        elif parts is not None and not all(isinstance(p, str) and p for p in parts):
            raise ConfigError(f"BoneConfig.train_parts entries must be non-empty strings, got {parts!r}")

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The adapter dtype as a torch.dtype (None: follow each base weight)."""
        return None if self.dtype is None else to_torch_dtype(self.dtype)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BoneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown BoneConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "BoneConfig":
        return cls.from_dict(json.loads(text))

