"""Model families: everything that differs between a Hugging Face folder and an RWKV `.pth`.

A family recognises its files, loads a model and its tokenizer, prepares a model for training
(vocabulary checks, activation checkpointing), merges an adapter into its files and gives the
decoder that generation runs it with. The trainer, `bone eval`, `bone merge` and generation ask
`family_of(path)` / `family_of_model(model)` instead of testing suffixes or model types. A new
family is one class (in its own module) plus one entry in `FAMILIES` (`bone.models`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Family:
    """Interface for one family of model files."""

    name: str

    def owns(self, path: Path) -> bool:
        """Whether `path` (a local path, already resolved from embedded names) is this family's."""
        raise NotImplementedError

    def owns_model(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def load_model(self, path: Path | str, dtype: torch.dtype | None, quant=None) -> nn.Module:
        """quant: a `bone.quant.QuantConfig` to quantize the linear layers with on load, or None."""
        raise NotImplementedError

    def load_tokenizer(self, path: Path | str):
        raise NotImplementedError

    def load_shapes(self, path: Path | str) -> nn.Module:
        """A model with the architecture and parameter shapes of `path`, for counting and target
        resolution; its weights may be missing (meta tensors). By default the model itself."""
        return self.load_model(path, None)

    def prepare(self, model: nn.Module, tokenizer) -> None:
        """Checks before training or evaluation (e.g. the tokenizer fits the embedding)."""

    def enable_gradient_checkpointing(self, model: nn.Module) -> None:
        """Non-reentrant activation checkpointing (reentrant drops a frozen base's adapter gradients)."""
        raise NotImplementedError

    def check_merge(self, base: Path, out: Path) -> None:
        """Refuse (before any work) a merge of `base` into `out` this family cannot write."""

    def merge_files(self, base: Path, adapter: Path, dest: Path) -> str:
        """Write base with the adapter merged to the new path `dest`; returns a summary line."""
        raise NotImplementedError

    def check_save_model(self, base: Path) -> None:
        """Refuse (before any work) `save_model` for this base: by default the family writes only
        merged adapters (`merge_files`), not whole models."""
        from ..errors import ModelError

        raise ModelError(f"{base} is a {self.name} model: bone writes merged models of this family only for Bone "
                         f"adapters (whole models are written for Hugging Face folders)")

    def save_model(self, model: nn.Module, base: Path, dest: Path) -> None:
        """Write an in-memory plain model (no adapters, nothing quantized; the base at `base` with new
        weights, e.g. a merge into dequantized weights or a full fine-tune) to the new path `dest` in
        `base`'s file format and floating dtypes, with the base's other files (tokenizer, ...)."""
        raise NotImplementedError

    def stored_dtypes(self, base: Path) -> set[torch.dtype]:
        """The floating dtypes the base's weight files store."""
        raise NotImplementedError

    def decoder(self, model: nn.Module):
        """A `bone.generation.Decoder` for `model`: how generation feeds it tokens and keeps its cache."""
        raise NotImplementedError
