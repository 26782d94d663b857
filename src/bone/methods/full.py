"""Full fine-tuning (`bone train method=full`): every weight trains; for small models and as a reference.

The saved result is a complete Hugging Face model folder (`save_pretrained`: config.json, the
weights in safetensors, the base's tokenizer files) that `AutoModelForCausalLM.from_pretrained`
loads on its own, plus `bone_full.json`, which marks it as this method's result so that
`bone eval --adapter` and `bone merge` find their way (a merged model is a copy of it).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import AdapterError, ModelError
from ..fs import open_up_files, write_json
from .base import Method, named_trainable

MARKER = "bone_full.json"  # {"method": "full", "base_model": ...}
INDEX, SINGLE = "model.safetensors.index.json", "model.safetensors"


def _parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every parameter once (tied weights under their first name), wrapper names removed."""
    return named_trainable(model, list(model.parameters()))


class FullMethod(Method):
    name = "full"
    about = "full fine-tuning: every weight trains (small models; a reference point)"

    def label(self, cfg, model=None):
        return "full fine-tuning"

    def count(self, model, cfg):
        return sum(p.numel() for _, p in _parameters(model))

    def apply(self, model, cfg):
        if not hasattr(model, "save_pretrained"):
            raise ModelError(f"method full saves Hugging Face model folders, and {type(model).__name__} has no "
                             f"save_pretrained: train this model with method=bone")
        return model.requires_grad_(True)

    def trainable(self, model):
        return named_trainable(model, [p for p in model.parameters() if p.requires_grad])

    def save(self, model, path, tensors=None):
        from ..models.hf import copy_side_files

        state = {n: t for n, t in model.state_dict().items()}
        state.update(tensors if tensors is not None else {n: p.detach() for n, p in self.trainable(model)})
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(path), state_dict={n: t.detach().contiguous().cpu() for n, t in state.items()})
        open_up_files(path)
        base = Path(getattr(model, "name_or_path", "") or "")
        if str(base) and base.is_dir() and base.resolve() != path.resolve():
            copy_side_files(base, path)  # the tokenizer, so the folder is a model of its own
        write_json(path / MARKER, {"method": self.name, "base_model": str(base) or None})

    def _read(self, path: Path) -> dict[str, torch.Tensor]:
        files = [SINGLE]
        if (path / INDEX).is_file():
            files = sorted(set(json.loads((path / INDEX).read_text())["weight_map"].values()))
        out = {}
        for f in files:
            if not (path / f).is_file():
                raise AdapterError(f"{path / f} is missing: not a complete full fine-tuning folder")
            try:
                out.update(load_file(path / f))
            except (SafetensorError, OSError) as err:
                raise AdapterError(f"{path / f} is corrupt or truncated ({err})") from None
        return out

    def read_trained(self, model, path):
        return self._matching(model, Path(path), self.trainable(model))

    def _matching(self, model: nn.Module, path: Path, params) -> dict[str, torch.Tensor]:
        saved = self._read(path)
        missing = [n for n, _ in params if n not in saved]
        wrong = [n for n, p in params if n in saved and tuple(saved[n].shape) != tuple(p.shape)]
        if missing or wrong:
            raise AdapterError(f"{path} does not fit this model: missing {missing[:3]}, other shapes {wrong[:3]} "
                               f"(it was trained from a different base)")
        return {n: saved[n] for n, _ in params}

    def owns(self, path):
        return (Path(path) / MARKER).is_file()

    def load(self, model, path):
        params = _parameters(model)
        saved = self._matching(model, Path(path), params)
        with torch.no_grad():
            for name, p in params:
                p.copy_(saved[name])
        return model

    def merged(self, model):
        return model
