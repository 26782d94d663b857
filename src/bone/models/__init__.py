"""One entry point for every model family: Hugging Face causal LMs and RWKV `.pth` checkpoints.

Every model returned answers `model(input_ids=ids, labels=None)` with an object whose `.logits`
is `(B, T, vocab)` (and `.loss` when labels are given), like transformers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .hub import looks_like_hub_name, require_hub

EMBEDDED = ("smollm2-135m",)  # names of models that ship inside a Python package


def resolve(path: str | Path) -> Path | str:
    """Map an embedded model name to its local folder; other values pass through."""
    if str(path) == "smollm2-135m":
        from .smollm2 import local_path

        return local_path()
    return path


def _is_rwkv(path) -> bool:
    return str(path).endswith(".pth")


def load_model(path: str | Path, dtype: torch.dtype | None = None):
    """Load a causal LM: a Hugging Face folder, an RWKV `.pth`, an embedded name, or a Hub name.

    dtype: parameter dtype (None = fp32 for RWKV, the checkpoint's own for HF)."""
    path = resolve(path)
    if _is_rwkv(path):
        from .rwkv import load_rwkv

        return load_rwkv(path, dtype=dtype)
    p = Path(path)
    if not p.exists():
        if looks_like_hub_name(str(path)):
            require_hub(str(path), "model", "model=/path/to/hf_model_dir")
        else:
            raise FileNotFoundError(
                f"model {str(path)!r} not found: pass a Hugging Face model folder, an RWKV .pth file, "
                f"or one of the embedded names {EMBEDDED}"
            )
    elif p.is_dir() and not (p / "config.json").exists():
        raise FileNotFoundError(f"{p} is a folder without config.json: not a Hugging Face model folder")
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or "auto")


def load_tokenizer(path: str | Path):
    """The tokenizer that goes with `load_model(path)` (RWKV: the World tokenizer)."""
    path = resolve(path)
    if _is_rwkv(path):
        from .rwkv import WorldTokenizer

        return WorldTokenizer()
    if not Path(path).exists() and looks_like_hub_name(str(path)):
        require_hub(str(path), "tokenizer", "model=/path/to/hf_model_dir")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
