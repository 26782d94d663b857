"""The RWKV family: BlinkDL `.pth` checkpoints (x070, x060), the World tokenizer, `.pth` merges."""
from __future__ import annotations

from pathlib import Path

import torch

from ...errors import ConfigError
from ..family import Family


class RWKVFamily(Family):
    name = "rwkv"

    def owns(self, path):
        return str(path).endswith(".pth")

    def owns_model(self, model):
        return getattr(getattr(model, "config", None), "model_type", "").startswith("rwkv")

    def load_model(self, path, dtype, quant=None):
        from .checkpoint import load_rwkv

        model = load_rwkv(path, dtype=dtype)
        if quant is not None:  # as RWKV-PEFT: the projections Bone targets are quantized, the rest stays
            from ...inject import default_target_names
            from ...quant.convert import quantize_linears

            quantize_linears(model, default_target_names(model), quant)
        return model

    def load_tokenizer(self, path):
        from .tokenizer import WorldTokenizer

        return WorldTokenizer()

    def prepare(self, model, tokenizer):
        from .tokenizer import check_vocab

        check_vocab(model, tokenizer)

    def enable_gradient_checkpointing(self, model):
        model.gradient_checkpointing_enable()

    def check_merge(self, base, out):
        if out.suffix != ".pth":
            raise ConfigError(f"--base is an RWKV .pth file, so --out must end in .pth too (got {out})")

    def merge_files(self, base, adapter, dest):
        from .merge import merge_pth

        merge_pth(base, adapter, dest)
        return f"merged {adapter} with the base model {base}"

    def save_model(self, model, base, dest):
        from .checkpoint import save_like

        save_like(model, base, dest)

    def stored_dtypes(self, base: Path):
        sd = torch.load(base, map_location="cpu", weights_only=True, mmap=True)
        return {t.dtype for t in sd.values() if torch.is_tensor(t) and t.is_floating_point()}

    def decoder(self, model):
        from .generation import RWKVDecoder

        return RWKVDecoder(model)
