"""Adapter directories: PEFT's layout, read and written.

A directory holds
  adapter_config.json        PEFT's config: "peft_type": "MISS", "r", "mini_r", "init_weights"
                             (true = shard, "bat" = col, "mini"), "target_modules" (exact names)
  adapter_model.safetensors  "base_model.model.<module>.miss_block" -> block tensor
  bone_config.json           this project's BoneConfig plus which modules are Conv1D (PEFT ignores it)
  bone_parts.safetensors     trained parts that are not whole modules (bone.parts; whole modules are
                             PEFT's "modules_to_save" in the two files above)
Which variant a directory holds is the variants' own business (`Variant.peft_type`,
`peft_init`, `peft_reads`): PEFT has no row variant, so row directories say "BONE_ROW", which
PEFT refuses instead of misreading the blocks; legacy PEFT Bone directories ("peft_type":
"BONE", ".bone_block" keys) are read too, and `read` / `load` also take RWKV-PEFT's `.pth`
checkpoints (bone.rwkv_peft). Every file is written atomically (`bone.fs`), and
`load` validates everything before it changes the model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from . import parts as trained_parts
from . import rwkv_peft, variants
from .adapters import bone_layers, layers_with, resolve
from .config import BoneConfig
from .errors import AdapterError, ConfigError, MissingPathError, ModelError, OutputExistsError
from .fs import atomic_write, save_safetensors, write_json
from .inject import adaptable, adapter_config, apply, require_unadapted, target_shape
from .layer import DEFAULT

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
BONE_FILE = "bone_config.json"
_PREFIX = "base_model.model."


def adapter_state_dict(model: nn.Module, name: str | None = None) -> dict[str, Tensor]:
    """{module name: block} of adapter `name` (default: the active one), for every layer holding it."""
    name = resolve(model, name)
    return {target: layer.adapter(name).block.detach() for target, layer in layers_with(model, name)}


def peft_config_dict(cfg: BoneConfig, names: list[str], model: nn.Module | None = None) -> dict:
    """The adapter_config.json PEFT expects for `cfg` adapting the modules `names`."""
    mcfg = getattr(model, "config", None)
    causal = type(model).__name__.endswith("ForCausalLM") if model is not None else False
    variant = variants.get(cfg.variant)
    return {
        "peft_type": variant.peft_type,
        "r": cfg.r,
        "mini_r": cfg.mini_r or 1,
        "init_weights": variant.peft_init,
        "miss_dropout": cfg.dropout,
        "target_modules": sorted(names),
        "exclude_modules": None,
        "bias": "none",
        "modules_to_save": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "inference_mode": True,
        "revision": None,
        "task_type": "CAUSAL_LM" if causal else None,
        "base_model_name_or_path": getattr(mcfg, "_name_or_path", None) or None,
    }


def save(model: nn.Module, path: str | os.PathLike, blocks: dict[str, Tensor] | None = None,
         parts: dict[str, Tensor] | None = None, name: str | None = None) -> Path:
    """Write adapter `name` (default: the active one; its blocks and the model's trained parts) as a
    PEFT-layout directory; returns the path. The folder does not record the name:
    `bone.load(model, path, name=...)` chooses one.

    blocks: {module name: full block} to write instead of the layers' own blocks (for example
    blocks gathered from FSDP shards); it must name exactly the layers that hold the adapter.
    parts: {parameter name: full value} likewise for the trained parts (bone.parts)."""
    if next(bone_layers(model), None) is None:
        raise ModelError("the model has no Bone adapters to save: call bone.apply or bone.load first")
    name = resolve(model, name)
    layers = layers_with(model, name)
    if blocks is None:
        blocks = {n: layer.adapter(name).block for n, layer in layers}
    elif set(blocks) != {n for n, _ in layers}:
        raise AdapterError(f"blocks must name exactly the model's Bone layers of adapter {name!r}; differences: "
                           f"{sorted(set(blocks) ^ {n for n, _ in layers})[:5]}")
    part_names = trained_parts.names(model)
    if parts is None:
        parts = {n: model.get_parameter(n) for n in part_names}
    elif set(parts) != set(part_names):
        raise AdapterError(f"parts must name exactly the model's trained parts; differences: {sorted(set(parts) ^ set(part_names))[:5]}")
    cfg = adapter_config(model, name)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a directory")
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"{_PREFIX}{n}.miss_block": blocks[n].detach().contiguous().cpu() for n, _ in layers}
    in_peft, modules, rest = trained_parts.split(model, parts)
    atomic_write(path / WEIGHTS_FILE, lambda tmp: save_safetensors({**tensors, **in_peft}, tmp, metadata={"format": "pt"}))
    trained_parts.write_rest(path, rest)
    write_json(path / CONFIG_FILE, {**peft_config_dict(cfg, [n for n, _ in layers], model), "modules_to_save": modules or None})
    bone_meta = {"config": cfg.to_dict(), "transposed": sorted(n for n, layer in layers if layer.transposed)}
    write_json(path / BONE_FILE, bone_meta)
    return path


def _config_from_peft(data: dict, file: Path) -> BoneConfig:
    ptype, init = data.get("peft_type"), data.get("init_weights", True)
    variant = variants.from_peft(ptype, init)
    if variant is None:
        known = sorted({t for v in variants.VARIANTS.values() for t, _ in v.peft_reads})
        if ptype in known:
            raise AdapterError(f"{file}: peft_type {ptype!r} with init_weights={init!r} is no Bone/MiSS variant bone knows")
        if ptype == "LORA":
            raise AdapterError(f"{file}: a PEFT LoRA adapter, not a Bone/MiSS one; load it with PEFT, or merge it with its "
                               f"base (bone merge --base BASE --adapter {file.parent} --out MERGED) and use MERGED as the model")
        raise AdapterError(f"{file}: peft_type {ptype!r} is not a Bone/MiSS adapter (bone reads peft_type {known})")
    if "r" not in data:
        raise AdapterError(f"{file}: missing field 'r'")
    return BoneConfig(
        r=int(data["r"]),
        variant=variant.name,
        mini_r=int(data.get("mini_r") or 1) if variant.uses_mini_r else None,
        target_modules=data.get("target_modules"),
        exclude_modules=data.get("exclude_modules"),
        dropout=float(data.get("miss_dropout", data.get("bone_dropout", 0.0)) or 0.0),
    )


def _read_json(file: Path) -> dict:
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{file} is not valid JSON ({err}); the file is corrupt or truncated") from None


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder in the layout this module reads (bone, PEFT MiSS or PEFT Bone)."""
    path = Path(path)
    if (path / BONE_FILE).is_file():
        return True
    if not (path / CONFIG_FILE).is_file():
        return False
    try:
        peft = json.loads((path / CONFIG_FILE).read_text())
    except json.JSONDecodeError:
        return True  # ours to read, and read_adapter reports the corruption
    return isinstance(peft, dict) and variants.from_peft(peft.get("peft_type"), peft.get("init_weights", True)) is not None


def read_adapter(path: str | os.PathLike) -> tuple[BoneConfig, dict[str, Tensor], set[str]]:
    """(config, {module name: block}, Conv1D module names) from a bone, PEFT MiSS or PEFT Bone dir.

    Raises with the file, the tensor and both shapes when the files disagree."""
    path = Path(path)
    if not path.is_dir():
        raise MissingPathError(f"adapter directory {path} does not exist")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            present = sorted(p.name for p in path.iterdir())
            raise MissingPathError(f"{path / name} is missing (the directory holds {present}); not an adapter directory")
    peft = _read_json(path / CONFIG_FILE)
    if not isinstance(peft, dict):
        raise AdapterError(f"{path / CONFIG_FILE} holds a {type(peft).__name__}, not a JSON object: the file is corrupt")
    transposed: set[str] = set()
    if (path / BONE_FILE).is_file():
        cfg, transposed = _read_bone_meta(path / BONE_FILE)
    else:
        cfg = _config_from_peft(peft, path / CONFIG_FILE)
    try:
        raw = load_file(path / WEIGHTS_FILE)
    except (SafetensorError, OSError) as err:
        raise AdapterError(f"{path / WEIGHTS_FILE} is corrupt or truncated ({err})") from None
    blocks = {}
    for key, tensor in raw.items():
        if trained_parts.is_peft_key(key, peft.get("modules_to_save")):
            continue  # a trained part (bone.parts.read)
        stem = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        for suffix in (".miss_block", ".bone_block", ".miss_block.default", ".bone_block.default"):
            if stem.endswith(suffix):
                blocks[stem[: -len(suffix)]] = tensor
                break
        else:
            raise AdapterError(f"{path / WEIGHTS_FILE}: unexpected tensor {key!r} (expected '<module>.miss_block')")
    if not blocks:
        raise AdapterError(f"{path / WEIGHTS_FILE} holds no adapter tensors")
    _check_block_ranks(cfg, blocks, path / WEIGHTS_FILE)
    if (path / BONE_FILE).is_file():
        _check_agreement(peft, cfg, sorted(blocks), path)
    _check_finite(blocks, path / WEIGHTS_FILE)
    return cfg, blocks, transposed


def _read_bone_meta(file: Path) -> tuple[BoneConfig, set[str]]:
    meta = _read_json(file)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise AdapterError(f"{file} has no \"config\" object: the file is corrupt (re-save the adapter with bone.save)")
    try:
        cfg = BoneConfig.from_dict(meta["config"])
    except ConfigError as err:
        raise AdapterError(f"{file}: {err}") from None
    return cfg, set(meta.get("transposed", []))


def _check_agreement(peft: dict, cfg: BoneConfig, names: list[str], path: Path) -> None:
    """adapter_config.json (what PEFT reads) must say what bone_config.json and the tensors say."""
    variant = variants.get(cfg.variant)
    said = variants.from_peft(peft.get("peft_type"), peft.get("init_weights", True))
    wants = [("peft_type / init_weights", (peft.get("peft_type"), peft.get("init_weights")),
              said is variant, f"variant {cfg.variant!r} ({variant.peft_type}, {variant.peft_init!r})"),
             ("r", peft.get("r"), peft.get("r") == cfg.r, f"r={cfg.r}")]
    if variant.uses_mini_r:
        wants.append(("mini_r", peft.get("mini_r"), peft.get("mini_r") == cfg.mini_r, f"mini_r={cfg.mini_r}"))
    targets = peft.get("target_modules")
    if isinstance(targets, list):
        wants.append(("target_modules", f"{len(targets)} module(s)", sorted(targets) == names,
                      f"{len(names)} adapted module(s) in {WEIGHTS_FILE}"))
    for field, value, ok, truth in wants:
        if not ok:
            raise AdapterError(
                f"{path}: {CONFIG_FILE} says {field} = {value!r} but {BONE_FILE} and the tensors say {truth}: "
                f"the files contradict each other (edited by hand?); restore {CONFIG_FILE} or re-save the adapter")


def _check_finite(blocks: dict[str, Tensor], file: Path) -> None:
    bad = [name for name, t in blocks.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise AdapterError(f"{file}: the block of {bad[0]} holds NaN or inf values ({len(bad)} block(s) in all): "
                           f"the training run diverged; use an earlier checkpoint")


def _check_block_ranks(cfg: BoneConfig, blocks: dict[str, Tensor], file: Path) -> None:
    """Shape facts that hold whatever the base model: the config must agree with every tensor."""
    variant = variants.get(cfg.variant)
    for name, t in blocks.items():
        if not variant.block_fits(tuple(t.shape), cfg.r, cfg.mini_r):
            raise AdapterError(
                f"{file}: tensor for {name} has shape {tuple(t.shape)}, but the config (variant {cfg.variant!r}, "
                f"r={cfg.r}) needs {variant.block_pattern(cfg.r, cfg.mini_r)}: config and weights disagree"
            )


class Adapter(NamedTuple):
    """Everything an adapter holds, whatever its format (`read`)."""

    cfg: BoneConfig
    blocks: dict[str, Tensor]  # {module name: block}
    transposed: set[str]  # Conv1D modules
    parts: dict[str, Tensor]  # {parameter name: trained value} (bone.parts)


def is_adapter(path: str | os.PathLike) -> bool:
    """Whether `path` is an adapter `read` takes: a folder (bone / PEFT) or an RWKV-PEFT `.pth` file."""
    return is_adapter_dir(path) or rwkv_peft.is_file(path)


def read(path: str | os.PathLike) -> Adapter:
    """The adapter at `path`: a bone / PEFT MiSS / PEFT Bone folder or an RWKV-PEFT `.pth` checkpoint."""
    if rwkv_peft.is_file(path):
        cfg, blocks, parts = rwkv_peft.read(path)
        return Adapter(cfg, blocks, set(), parts)
    cfg, blocks, transposed = read_adapter(path)
    peft = _read_json(Path(path) / CONFIG_FILE)
    return Adapter(cfg, blocks, transposed, trained_parts.read(Path(path), Path(path) / WEIGHTS_FILE, peft.get("modules_to_save")))


def _check_parts(model: nn.Module, cfg: BoneConfig, parts: dict[str, Tensor], blocks: dict[str, Tensor], file: Path) -> None:
    """Every trained part names a parameter of `model` of the same shape, outside the adapted layers, and
    they are the parameters cfg.train_parts picks (when the adapter was trained with patterns)."""
    params = dict(model.named_parameters())
    picked = trained_parts.matching(list(params), cfg.train_parts)
    if cfg.train_parts and set(picked) != set(parts):
        raise AdapterError(f"{file}: train_parts={cfg.train_parts!r} picks {len(picked)} parameter(s) of this model but "
                           f"the adapter holds {len(parts)} (missing {sorted(set(picked) - set(parts))[:3]}, unexpected "
                           f"{sorted(set(parts) - set(picked))[:3]}): a parts file is missing, or the adapter was made "
                           f"for a different base model")
    for name, value in parts.items():
        if name not in params:
            raise AdapterError(f"{file}: trained part {name!r} is not a parameter of this model (e.g. {list(params)[:3]}): "
                               f"the adapter was made for a different base model")
        if tuple(value.shape) != tuple(params[name].shape):
            raise AdapterError(f"{file}: trained part {name} has shape {tuple(value.shape)}, the model's has "
                               f"{tuple(params[name].shape)}: the adapter was made for a different base model")
        owner = next((m for m in blocks if name.startswith(m + ".")), None)
        if owner is not None:
            raise AdapterError(f"{file} holds both a block for {owner} and a trained value for {name}: a layer is "
                               f"either adapted or trained in full, not both")


def load(model: nn.Module, path: str | os.PathLike, name: str | None = None, **overrides) -> nn.Module:
    """Inject the adapter stored at `path` (a folder, or an RWKV-PEFT `.pth`) into `model` and load its
    blocks and trained parts. Nothing changes on error.

    name: add it under this name next to the model's other adapters, as the active one
    (`bone.adapters`); None: the single-adapter API ("default", on a model without adapters).
    overrides: BoneConfig fields that do not change the math (fused, chunk_size, keep_merged, cache_merged,
    dtype, dropout)."""
    require_unadapted(model, name)
    cfg, blocks, _, parts = read(path)
    fixed = {"r", "variant", "mini_r", "target_modules", "exclude_modules", "train_parts"} & set(overrides)
    if fixed:
        raise AdapterError(f"{sorted(fixed)} are fixed by the adapter file and cannot be overridden")
    cfg = BoneConfig.from_dict({**cfg.to_dict(), **overrides})
    file = Path(path) if Path(path).is_file() else Path(path) / WEIGHTS_FILE
    modules = dict(model.named_modules())
    variant = variants.get(cfg.variant)
    for target, block in blocks.items():
        module = modules.get(target)
        if module is None or not adaptable(module):
            linear = [n for n, m in modules.items() if adaptable(m)][:5]
            raise AdapterError(f"{file}: module {target!r} is not a linear layer of this model (e.g. {linear})")
        out, in_ = target_shape(module)
        expected = variant.block_shape(out, in_, cfg.r, cfg.mini_r)
        if tuple(block.shape) != tuple(expected):
            raise AdapterError(
                f"{file}: tensor for {target} has shape {tuple(block.shape)}, but the model's layer (out={out}, "
                f"in={in_}) needs {tuple(expected)}: the adapter was made for a different base model"
            )
    _check_parts(model, cfg, parts, blocks, file)
    apply(model, cfg, modules=sorted(blocks), parts=[n for n, _ in model.named_parameters() if n in parts], name=name)
    name = name or DEFAULT
    with torch.no_grad():
        for target, layer in layers_with(model, name):
            layer.adapter(name).block.copy_(blocks[target])
    trained_parts.assign(model, parts)
    return model
