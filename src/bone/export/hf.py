"""Streaming merge of a Bone adapter into a Hugging Face safetensors model folder.

Shard by shard, tensor by tensor (`safe_open`): each adapted `<module>.weight` is replaced by
`bone.merge_state_dict`'s merged weight (fp32 arithmetic, cast once to the stored dtype); every
other tensor is copied unchanged. The output keeps the input's shard files, index json, dtypes
and metadata, plus its config / tokenizer files. Peak memory: about one shard.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from .. import merge_state_dict, read_adapter

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
            raise FileNotFoundError(f"{base / INDEX} names shard(s) {missing} that are not in {base}")
        return files
    if (base / SINGLE).is_file():
        return [SINGLE]
    weights = sorted(p.name for p in base.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
    raise FileNotFoundError(
        f"{base} has no {SINGLE} or {INDEX} (weight files found: {weights or 'none'}); bone merge streams safetensors: "
        f"re-save the model with model.save_pretrained(dir) (transformers writes safetensors)"
    )


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def check_paths(inputs: list[Path], out: Path, overwrite: bool) -> None:
    """Refuse an output that is, contains or lies inside an input, or that exists (without overwrite)."""
    o = out.resolve()
    for p in inputs:
        r = p.resolve()
        if _inside(o, r) or _inside(r, o):
            raise ValueError(f"--out {out} overlaps the input {p}: bone merge never writes over or inside its inputs")
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} already exists: choose a new folder or pass --overwrite to replace it")


def module_of(key: str) -> str | None:
    return key[: -len(".weight")] if key.endswith(".weight") else None


def merge_folder(base: Path, adapter: Path, dest: Path) -> dict:
    """Write the merged model into the new folder `dest`; returns {"merged": n, "tensors": n, "shards": n}."""
    cfg, blocks, transposed = read_adapter(adapter)
    files = shard_files(base)
    located = {}
    for f in files:
        with safe_open(base / f, framework="pt") as fh:
            for key in fh.keys():
                name = module_of(key)
                if name in blocks:
                    located[name] = f
    missing = sorted(set(blocks) - set(located))
    if missing:
        raise KeyError(
            f"the adapter adapts {len(missing)} module(s) with no '<module>.weight' in {base}, e.g. {missing[:3]}: "
            f"the adapter was trained on a different base model"
        )
    dest.mkdir(parents=True)
    n_tensors = 0
    for f in files:
        out_tensors = {}
        with safe_open(base / f, framework="pt") as fh:
            metadata = fh.metadata() or {"format": "pt"}
            for key in fh.keys():
                t = fh.get_tensor(key)
                name = module_of(key)
                if name in blocks:
                    t = merge_state_dict({key: t}, cfg, {name: blocks[name]}, transposed & {name})[key]
                out_tensors[key] = t.contiguous()
                n_tensors += 1
        save_file(out_tensors, dest / f, metadata=metadata)
        del out_tensors
    for p in base.iterdir():
        if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES) and not p.name.startswith("."):
            shutil.copy2(p, dest / p.name)
    return {"merged": len(blocks), "tensors": n_tensors, "shards": len(files)}
