"""One entry point for every model family: Hugging Face causal LMs and RWKV `.pth` checkpoints.

Every model returned answers `model(input_ids=ids, labels=None)` with an object whose `.logits`
is `(B, T, vocab)` (and `.loss` when labels are given), like transformers. What differs between
families lives in their `Family` object (`bone.models.family`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from .family import Family
from .hf import HFFamily
from .rwkv.family import RWKVFamily

EMBEDDED = ("smollm2-135m",)  # names of models that ship inside a Python package
FAMILIES: list[Family] = [RWKVFamily(), HFFamily()]  # the first that owns a path wins


def resolve(path: str | Path) -> Path | str:
    """Map an embedded model name to its local folder; other values pass through."""
    if str(path) == "smollm2-135m":
        from .smollm2 import local_path

        return local_path()
    return path


def family_of(path: str | Path) -> Family:
    """The family of a (resolved) model path."""
    return next(f for f in FAMILIES if f.owns(Path(path)))


def family_of_model(model: nn.Module) -> Family:
    for f in FAMILIES:
        if f.owns_model(model):
            return f
    raise ModelError(f"{type(model).__name__} belongs to no model family bone knows")


def load_model(path: str | Path, dtype: torch.dtype | None = None, quantize=None, compute_dtype=None):
    """Load a causal LM: a Hugging Face folder, an RWKV `.pth`, an embedded name, or a Hub name.

    dtype: parameter dtype (None = fp32 for RWKV, the checkpoint's own for HF).
    quantize: "nf4", "fp4" or "int8" (or a `bone.quant.QuantConfig`): quantize the linear layers with
    bitsandbytes on load (HF: every linear but the output head; RWKV: the default Bone targets).
    compute_dtype: the dtype the quantized layers compute in (default float32)."""
    from ..quant.config import parse

    quant = parse(quantize, compute_dtype)
    if quant is not None:
        from ..quant.bnb import require

        require()  # before any loading work
    path = resolve(path)
    return family_of(path).load_model(path, dtype, quant)


def load_shapes(path: str | Path) -> nn.Module:
    """The architecture and parameter shapes of `load_model(path)`, without reading its weights where the
    family allows (Hugging Face: meta tensors), for counting parameters before any training."""
    path = resolve(path)
    return family_of(path).load_shapes(path)


def load_tokenizer(path: str | Path):
    """The tokenizer that goes with `load_model(path)` (RWKV: the World tokenizer)."""
    path = resolve(path)
    return family_of(path).load_tokenizer(path)
