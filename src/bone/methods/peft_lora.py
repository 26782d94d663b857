"""The LoRA family of baselines, from PEFT itself: LoRA, PiSSA and DoRA (`bone train method=lora|pissa|dora`).

Each is PEFT's own `LoraConfig` (`init_lora_weights=True`, `"pissa"`, `use_dora=True`) with the
run's `lora:` section (r, alpha, dropout; targets default to the bone section's), so `bone compare`
sets them against Bone in one training loop. `lora.r: auto` picks the rank whose trainable count
is closest to the bone section's on the same model.

Saved results are PEFT adapter folders (`adapter_config.json` + `adapter_model.safetensors`, keys
as `get_peft_model_state_dict` writes them) that `PeftModel.from_pretrained` loads on the ORIGINAL
base. PiSSA rewrites the base weights at init (W = W_res + s B0 A0), so its folders are converted
as PEFT documents for `save_pretrained(path_initial_model_for_weight_conversion=...)`:
A' = [A; A0], B' = [B, -B0], rank and alpha doubled (same scale), so that
W + s B'A' = W_res + s B A. The trained A, B are the first r rows / columns, which is how a
checkpoint is read back when resuming (the init half must equal the one recomputed from the base).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..bases import shape_of
from ..errors import AdapterError, require
from ..fs import atomic_write, save_safetensors, write_json
from ..inject import resolve_targets
from .base import Method, named_trainable

INSTALL = 'pip install "bone[compare]"'
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."
INITIAL = "bone_lora_initial"  # model attribute: {parameter name: value at init} (PiSSA; for the conversion)
MATCH = "bone_lora_match"  # model attribute: (rank, its trainable count, the bone section's count), set by apply


def _read_config(path: Path) -> dict | None:
    try:
        data = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _targets(model: nn.Module, cfg) -> list[str]:
    """Exact names of the modules LoRA adapts: lora.target_modules, else the bone section's targets."""
    spec = cfg.bone if cfg.lora.target_modules is None else replace(cfg.bone, target_modules=cfg.lora.target_modules,
                                                                    exclude_modules=None)
    return resolve_targets(model, spec)


def _peft_target_spec(model: nn.Module, names: list[str]) -> list[str]:
    """What adapter_config.json lists: the last name parts when they pick exactly `names`, else the names."""
    short = sorted({n.rsplit(".", 1)[-1] for n in names})
    picked = {n for n, _ in model.named_modules() if n and n.rsplit(".", 1)[-1] in short}
    return short if picked == set(names) else sorted(names)


class LoraMethod(Method):
    """PEFT LoRA; PiSSA and DoRA below change its init or its layers."""

    name = "lora"
    about = "LoRA baseline from PEFT (lora section: r or auto, alpha, dropout)"
    title = "LoRA"
    init_lora_weights: bool | str = True
    use_dora = False

    def require(self):
        return require("peft", INSTALL, f"method {self.name}")

    def label(self, cfg, model=None):
        if model is None or cfg.lora.r != "auto":
            return f"{self.title} r={cfg.lora.r}"
        return f"{self.title} r={self._match(model, cfg)[0]} (auto)"

    # ---------------------------------------------------------------- size
    def _per_rank(self, model: nn.Module, names: list[str]) -> tuple[int, int]:
        """(parameters per unit of rank, parameters independent of the rank) over the targets."""
        shapes = [shape_of(model.get_submodule(n)) for n in names]
        return sum(o + i for o, i in shapes), (sum(o for o, _ in shapes) if self.use_dora else 0)

    def _match(self, model: nn.Module, cfg) -> tuple[int, int, int | None]:
        """(rank, its trainable count, the bone section's count or None when lora.r is a number)."""
        from . import get

        per_rank, fixed = self._per_rank(model, _targets(model, cfg))
        if cfg.lora.r != "auto":
            return cfg.lora.r, cfg.lora.r * per_rank + fixed, None
        bone = get("bone").count(model, cfg)
        guess = max(1, round((bone - fixed) / per_rank))
        rank = min((r for r in (guess - 1, guess, guess + 1) if r >= 1), key=lambda r: (abs(r * per_rank + fixed - bone), r))
        return rank, rank * per_rank + fixed, bone

    def count(self, model, cfg):
        return self._match(model, cfg)[1]

    def notes(self, model, cfg):
        if cfg.lora.r != "auto":
            return []
        rank, n, bone = getattr(model, MATCH)
        return [f"lora.r=auto: {self.title} rank {rank} trains {n:,} parameters, the closest to the bone section "
                f"(Bone-{cfg.bone.variant} r={cfg.bone.r}: {bone:,}) on the same model ({(n - bone) / bone:+.1%})"]

    # ---------------------------------------------------------------- train
    def apply(self, model, cfg):
        peft = self.require()
        names = _targets(model, cfg)
        match = self._match(model, cfg)
        rank = match[0]
        causal = type(model).__name__.endswith("ForCausalLM")
        config = peft.LoraConfig(r=rank, lora_alpha=cfg.lora.alpha if cfg.lora.alpha is not None else rank,
                                 lora_dropout=cfg.lora.dropout, target_modules=_peft_target_spec(model, names),
                                 init_lora_weights=self.init_lora_weights, use_dora=self.use_dora,
                                 task_type="CAUSAL_LM" if causal else None)
        model = peft.get_peft_model(model, config)
        setattr(model, MATCH, match)
        self._keep_initial(model)
        return model

    def _keep_initial(self, model: nn.Module) -> None:
        """Nothing to keep: LoRA and DoRA folders need no conversion."""

    def trainable(self, model):
        return named_trainable(model, [p for p in model.parameters() if p.requires_grad])

    # ---------------------------------------------------------------- files
    def _peft_keys(self, model: nn.Module) -> dict[str, str]:
        """{trainable parameter name: its key in adapter_model.safetensors}, by PEFT's own naming rules."""
        from peft import get_peft_model_state_dict

        names = [n for n, _ in self.trainable(model)]
        marked = get_peft_model_state_dict(model, state_dict={n: torch.tensor(i) for i, n in enumerate(names)})
        return {names[int(v)]: k for k, v in marked.items()}

    def _config_dict(self, model: nn.Module) -> dict:
        out = model.peft_config["default"].to_dict()
        out.update(inference_mode=True, peft_type=str(out["peft_type"].value))
        return {k: sorted(v) if isinstance(v, set) else v for k, v in out.items()}

    def save(self, model, path, tensors=None):
        values = tensors if tensors is not None else {n: p.detach() for n, p in self.trainable(model)}
        keys = self._peft_keys(model)
        state = {keys[n]: values[n].detach().contiguous().cpu() for n in keys}
        config = self._config_dict(model)
        state, config = self._for_original_base(model, state, config)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write(path / WEIGHTS_FILE, lambda tmp: save_safetensors(state, tmp, metadata={"format": "pt"}))
        write_json(path / CONFIG_FILE, config)

    def _for_original_base(self, model: nn.Module, state: dict, config: dict) -> tuple[dict, dict]:
        """The saved tensors and config as they apply to the original base weights (LoRA, DoRA: as they are)."""
        return state, config

    def _read_weights(self, path: Path) -> dict[str, torch.Tensor]:
        if not (path / WEIGHTS_FILE).is_file():
            raise AdapterError(f"{path / WEIGHTS_FILE} is missing: not a {self.title} adapter folder")
        try:
            return load_file(path / WEIGHTS_FILE)
        except (SafetensorError, OSError) as err:
            raise AdapterError(f"{path / WEIGHTS_FILE} is corrupt or truncated ({err})") from None

    def read_trained(self, model, path):
        saved = self._read_weights(Path(path))
        keys = self._peft_keys(model)
        missing = sorted(k for k in keys.values() if k not in saved)
        if missing or len(saved) != len(keys):
            extra = sorted(set(saved) - set(keys.values()))
            raise AdapterError(f"{path} does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}")
        trained = self._trained_part(model, {n: saved[k] for n, k in keys.items()}, Path(path))
        for name, p in self.trainable(model):
            if tuple(trained[name].shape) != tuple(p.shape):
                raise AdapterError(f"{path} does not fit this model: {name} has shape {tuple(trained[name].shape)} "
                                   f"there, {tuple(p.shape)} here (another lora.r or targets?)")
        return trained

    def _trained_part(self, model: nn.Module, saved: dict, path: Path) -> dict[str, torch.Tensor]:
        """The trained tensors in a saved folder (keyed by parameter name), undoing `_for_original_base`."""
        return saved

    def owns(self, path):
        data = _read_config(Path(path))
        return data is not None and data.get("peft_type") == "LORA" and bool(data.get("use_dora")) == self.use_dora

    def _check_fits(self, model: nn.Module, path: Path) -> None:
        """Every saved LoRA tensor names a linear layer of `model` with matching sizes (before PEFT touches it)."""
        modules = dict(model.named_modules())
        for key, t in self._read_weights(path).items():
            stem = key[len(PREFIX):] if key.startswith(PREFIX) else key
            module, _, part = stem.rpartition(".lora_")
            if module not in modules:
                raise AdapterError(f"{path}: {key} adapts {module!r}, which this base model does not have: "
                                   f"the adapter was trained on a different base")
            out, in_ = shape_of(modules[module])
            want = {"A.weight": in_, "B.weight": out, "magnitude_vector": out}.get(part)
            got = t.shape[-1] if part == "A.weight" else t.shape[0]
            if want is None or got != want:
                raise AdapterError(f"{path}: {key} has shape {tuple(t.shape)}, which does not fit {module} "
                                   f"(out {out}, in {in_}): the adapter was trained on a different base")

    def load(self, model, path):
        peft = self.require()
        self._check_fits(model, Path(path))
        return peft.PeftModel.from_pretrained(model, str(path))

    def fold(self, model):
        model.merge_adapter()  # generation then runs at base-model speed

    def merged(self, model):
        return model.merge_and_unload()


class PissaMethod(LoraMethod):
    name = "pissa"
    about = "PiSSA baseline from PEFT (LoRA initialised from the principal singular vectors; lora section)"
    title = "PiSSA"
    init_lora_weights = "pissa"

    def owns(self, path):
        return False  # its folders are converted LoRA folders: the lora method reads them

    def _keep_initial(self, model):
        setattr(model, INITIAL, {n: p.detach().clone().cpu() for n, p in self.trainable(model)})

    def _initial(self, model: nn.Module) -> dict[str, torch.Tensor]:
        keys = self._peft_keys(model)
        return {keys[n]: t for n, t in getattr(model, INITIAL).items()}

    def _for_original_base(self, model, state, config):
        init, out = self._initial(model), {}
        for key, t in state.items():
            if ".lora_A." in key:
                out[key] = torch.cat([t, init[key]], dim=0)
            elif ".lora_B." in key:
                out[key] = torch.cat([t, -init[key]], dim=1)
            else:
                raise AdapterError(f"PiSSA conversion met an unexpected tensor {key!r}")
        rank_pattern = {k: 2 * v for k, v in (config.get("rank_pattern") or {}).items()}
        alpha_pattern = {k: 2 * v for k, v in (config.get("alpha_pattern") or {}).items()}
        return out, {**config, "r": 2 * config["r"], "lora_alpha": 2 * config["lora_alpha"], "init_lora_weights": True,
                     "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern}

    def _trained_part(self, model, saved, path):
        initial, out = getattr(model, INITIAL), {}
        for name, t in saved.items():
            r = initial[name].shape[0 if ".lora_A." in name else 1]
            if t.shape[0 if ".lora_A." in name else 1] != 2 * r:
                raise AdapterError(f"{path} does not fit this model: {name} holds rank {t.shape[0 if '.lora_A.' in name else 1]}, "
                                   f"a converted PiSSA adapter of rank {r} holds {2 * r} (another lora.r or targets?)")
            trained, init = (t[:r], t[r:]) if ".lora_A." in name else (t[:, :r], -t[:, r:])
            if init.shape != initial[name].shape or not torch.allclose(init, initial[name], rtol=1e-4, atol=1e-6):
                raise AdapterError(f"{path}: the PiSSA initialisation saved there differs from the one computed from "
                                   f"this base model ({name}): resume on the same base model, dtype and targets")
            out[name] = trained
        return out


class DoraMethod(LoraMethod):
    name = "dora"
    about = "DoRA baseline from PEFT (LoRA with a trained magnitude per output; lora section)"
    title = "DoRA"
    use_dora = True
