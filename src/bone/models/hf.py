"""The Hugging Face family: folders with config.json and safetensors weights.

Loading goes through transformers; a quantized load (`quant`) passes transformers a
BitsAndBytesConfig that keeps `bone.quant.full_precision_modules` in full precision. A folder
already quantized by bitsandbytes loads as it is; one quantized by another tool is refused. Merging streams shard by shard, tensor by tensor (`safe_open`): each adapted `<module>.weight` is replaced by
`bone.merge_state_dict`'s merged weight (fp32 arithmetic, cast once to the stored dtype); every
other tensor is copied unchanged. The output keeps the input's shard files, index json, dtypes
and metadata, plus its config / tokenizer files. Peak memory: about one shard.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import AdapterError, ConfigError, MissingPathError, ModelError
from ..fs import open_up_files, save_safetensors
from ..io import read
from ..merging import merge_state_dict
from .family import Family
from .hub import looks_like_hub_name, require_hub

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")  # never copied


def shard_files(base: Path) -> list[str]:
    """The safetensors files of a HF folder, in the order the index (or the single file) names them."""
    if (base / INDEX).is_file():
        weight_map = json.loads((base / INDEX).read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (base / f).is_file()]
        if missing:
            raise MissingPathError(f"{base / INDEX} names shard(s) {missing} that are not in {base}")
        return files
    if (base / SINGLE).is_file():
        return [SINGLE]
    weights = sorted(p.name for p in base.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
    raise MissingPathError(
        f"{base} has no {SINGLE} or {INDEX} (weight files found: {weights or 'none'}); bone merge streams safetensors: "
        f"re-save the model with model.save_pretrained(dir) (transformers writes safetensors)"
    )


def module_of(key: str) -> str | None:
    return key[: -len(".weight")] if key.endswith(".weight") else None


def merge_folder(base: Path, adapter: Path, dest: Path) -> dict:
    """Write the merged model into the new folder `dest`; returns {"merged": n, "tensors": n, "shards": n}.
    Trained parts (bone.parts) replace the stored tensors of the same name."""
    cfg, blocks, transposed, parts = read(adapter)
    files = shard_files(base)
    located, stored = {}, set()
    for f in files:
        with safe_open(base / f, framework="pt") as fh:
            for key in fh.keys():
                stored.add(key)
                name = module_of(key)
                if name in blocks:
                    located[name] = f
    missing = sorted(set(blocks) - set(located))
    if missing:
        raise AdapterError(
            f"the adapter adapts {len(missing)} module(s) with no '<module>.weight' in {base}, e.g. {missing[:3]}: "
            f"the adapter was trained on a different base model"
        )
    absent = sorted(set(parts) - stored)
    if absent:
        raise AdapterError(f"the adapter trains part(s) {absent[:3]} that {base} does not store (tied to another "
                           f"weight, or a different base model): bone merge cannot write them")
    dest.mkdir(parents=True)
    n_tensors = 0
    for f in files:
        out_tensors = {}
        with safe_open(base / f, framework="pt") as fh:
            metadata = fh.metadata() or {"format": "pt"}
            for key in fh.keys():
                t = fh.get_tensor(key)
                name = module_of(key)
                if name in blocks or key in parts:
                    mine = {name: blocks[name]} if name in blocks else {}
                    t = merge_state_dict({key: t}, cfg, mine, transposed & set(mine), parts={key: parts[key]} if key in parts else None)[key]
                out_tensors[key] = t.contiguous()
                n_tensors += 1
        save_safetensors(out_tensors, dest / f, metadata=metadata)
        del out_tensors
    copy_side_files(base, dest)
    return {"merged": len(blocks), "tensors": n_tensors, "shards": len(files)}


def copy_side_files(base: Path, dest: Path) -> None:
    """Copy the files of the folder `base` that are not weights (config, tokenizer, ...) into `dest`,
    keeping the ones `dest` already has."""
    for p in base.iterdir():
        if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith(".") and not (dest / p.name).exists():
            shutil.copy2(p, dest / p.name)


def _stored_quantization(path) -> dict | None:
    """The quantization_config a local folder's config.json declares, or None."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    qc = json.loads(config.read_text()).get("quantization_config")
    return qc if isinstance(qc, dict) else None


def _quantized_kwargs(path, quant, dtype) -> dict:
    """from_pretrained's quantization_config for `quant` (after checking the folder), or {}."""
    stored = _stored_quantization(path)
    if stored is not None:
        method = stored.get("quant_method")
        if method != "bitsandbytes":
            raise ModelError(f"{path} holds weights quantized with {method!r}; bone reads bitsandbytes 4-bit / 8-bit "
                             f"models only: use the full-precision model (with quantize='nf4', 'fp4' or 'int8')")
        if quant is not None:
            raise ConfigError(f"{path} is already quantized by bitsandbytes; load it without quantize=")
        from ..quant.bnb import require

        require()
        return {}
    if quant is None:
        return {}
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..quant.convert import full_precision_modules, warn_kept

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)))
    keep = full_precision_modules(skeleton, quant)
    warn_kept(keep, skeleton, quant)
    return {"quantization_config": quant.hf_config([re.escape(n) for n in keep])}


_DTYPES = {"F32": torch.float32, "F64": torch.float64, "BF16": torch.bfloat16, "F16": torch.float16}


class HFFamily(Family):
    name = "hf"

    def owns(self, path):
        return not str(path).endswith(".pth")

    def owns_model(self, model):
        return not getattr(getattr(model, "config", None), "model_type", "").startswith("rwkv")

    def _check_source(self, path, what: str) -> None:
        """A local folder must exist (and hold config.json for a model); a Hub name needs the Hub."""
        p = Path(path)
        if p.exists():
            if what == "model" and p.is_dir() and not (p / "config.json").exists():
                raise MissingPathError(f"{p} is a folder without config.json: not a Hugging Face model folder")
            return
        if looks_like_hub_name(str(path)):
            require_hub(str(path), what, "model=/path/to/hf_model_dir")
            return
        whose = " (read from the model's folder unless model.tokenizer / --tokenizer names one)" if what == "tokenizer" else ""
        raise MissingPathError(
            f"{what} {str(path)!r} not found{whose}: pass a Hugging Face model folder, an RWKV .pth file, "
            f"or an embedded name (smollm2-135m)")

    def load_model(self, path, dtype, quant=None):
        self._check_source(path, "model")
        from transformers import AutoModelForCausalLM

        kw = _quantized_kwargs(path, quant, dtype)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype or "auto", **kw)
        if kw or _stored_quantization(path) is not None:
            from ..bases import prepare

            prepare(model)  # bitsandbytes layers: no CPU repacking (bone.quant.kinds)
        return model

    def load_shapes(self, path):
        self._check_source(path, "model")
        from transformers import AutoConfig, AutoModelForCausalLM

        with torch.device("meta"):  # shapes only: nothing is read or allocated
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)))

    def load_tokenizer(self, path):
        self._check_source(path, "tokenizer")
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok

    def enable_gradient_checkpointing(self, model):
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def check_merge(self, base, out):
        if not (base / "config.json").is_file():
            raise MissingPathError(f"--base {base} is not a Hugging Face model folder (no config.json)")

    def merge_files(self, base, adapter, dest):
        stats = merge_folder(base, adapter, dest)
        return f"merged {stats['merged']} adapted weights ({stats['tensors']} tensors, {stats['shards']} shard(s))"

    def check_save_model(self, base):
        self.check_merge(base, base)

    def save_model(self, model, base, dest):
        stored = self.stored_dtypes(base)
        if len(stored) == 1:
            model = model.to(next(iter(stored)))
        model.save_pretrained(str(dest))
        open_up_files(dest)
        copy_side_files(base, dest)

    def stored_dtypes(self, base):
        out = set()
        for f in shard_files(base):
            with safe_open(base / f, framework="pt") as fh:
                out |= {fh.get_slice(k).get_dtype() for k in fh.keys()}
        return {_DTYPES[d] for d in out if d in _DTYPES}

    def decoder(self, model):
        from ..generation.hf import HFDecoder

        return HFDecoder(model)
