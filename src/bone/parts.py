"""Trained parts: base parameters trained in full beside the Bone blocks.

RWKV-PEFT trains, next to its blocks, every parameter whose name contains one of its
`--train_parts` (by default `time` and `ln`; `emb`, `head` on request); PEFT users know the idea as
`modules_to_save`. `BoneConfig.train_parts` names them the same way: a list of substrings of
parameter names (each must match at least one parameter) or one regex matching whole names.

`bone.apply` resolves the patterns on the base model, refuses parameters of adapted layers, unfreezes
the parts and keeps a CPU copy of their original values, so that
  - `bone.disabled(model)` runs the base model (the originals are swapped in for the block),
  - `bone.merge` / `bone.unmerge` leave them as trained (the adapted model uses them either way),
  - `bone.unload(model)` keeps the trained values after a merge and restores the originals otherwise.

In an adapter folder, parts that make up whole modules are written as PEFT's `modules_to_save`
(`base_model.model.<module>.<param>` in adapter_model.safetensors, the module names in
adapter_config.json), so PEFT loads them; the others (e.g. RWKV's `att.time_maa_x`, which belongs
to a module that also holds adapted layers) go to `bone_parts.safetensors`, keyed by name.
"""
from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from .errors import AdapterError, ConfigError
from .fs import atomic_write, save_safetensors

FILE = "bone_parts.safetensors"  # parts that are not whole modules, keyed by parameter name
PEFT_PREFIX = "base_model.model."
_RECORD = "_bone_parts"  # the model attribute holding the Record


@dataclass
class Record:
    """The parts of an adapted model: their names and their values before training."""

    names: list[str]
    originals: dict[str, Tensor]  # CPU copies taken by `attach`


# --- choosing -----------------------------------------------------------------------------------
def _close(pattern: str, names: list[str]) -> str:
    """Names (or name components) that look like `pattern`, for an error message."""
    pieces = sorted({c for n in names for c in n.split(".")} | set(names))
    close = difflib.get_close_matches(pattern, pieces, n=6, cutoff=0.6)
    if close:
        return f"close names: {close}"
    leaves = sorted({n.split(".")[-1] for n in names})
    return f"parameter names end in: {leaves[:12]}{' ...' if len(leaves) > 12 else ''} (e.g. {names[0] if names else 'none'})"


def matching(names: list[str], spec: list[str] | str | None) -> list[str]:
    """The `names` that `spec` (BoneConfig.train_parts) picks: containing an entry, or matching the regex whole."""
    if not spec:
        return []
    if isinstance(spec, str):
        rx = re.compile(spec)
        return [n for n in names if rx.fullmatch(n)]
    return [n for n in names if any(p in n for p in spec)]


def resolve(model: nn.Module, spec: list[str] | str | None, targets: list[str]) -> list[str]:
    """The parameter names `spec` (BoneConfig.train_parts) picks, in model order, checked (`check`).

    Raises ConfigError for a pattern that matches no parameter, naming close ones."""
    names = [n for n, _ in model.named_parameters()]
    if isinstance(spec, str) and not matching(names, spec):
        raise ConfigError(f"train_parts={spec!r} (a regex matching whole parameter names) matches no parameter of "
                          f"the model; {_close(spec, names)}")
    for pattern in spec if isinstance(spec, list) else []:
        if not matching(names, [pattern]):
            raise ConfigError(f"train_parts entry {pattern!r} is not part of any parameter name of the model; "
                              f"{_close(pattern, names)}")
    chosen = matching(names, spec)
    check(model, chosen, targets, f"train_parts={spec!r}")
    return chosen


def check(model: nn.Module, names: list[str], targets: list[str], what: str = "train_parts") -> list[str]:
    """Refuse parts that belong to adapted layers (`targets`) or that are not floating-point
    parameters of the model; returns `names`."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ConfigError(f"{what}: {missing[:4]} are not parameters of the model; {_close(missing[0], list(params))}")
    both = [(n, t) for n in names for t in targets if n.startswith(t + ".")]
    if both:
        name, target = both[0]
        raise ConfigError(
            f"{what} picks {name}, a parameter of the adapted layer {target} ({len(both)} such parameter(s)): a layer is "
            f"either adapted (target_modules) or trained in full (train_parts), not both; narrow the pattern or leave "
            f"the layer out with exclude_modules")
    frozen = [n for n in names if not params[n].is_floating_point()]
    if frozen:
        raise ConfigError(f"{what} picks {frozen[0]} (stored as {params[frozen[0]].dtype}, a quantized weight): "
                          f"only floating-point parameters can be trained in full")
    return names


# --- the model's record -------------------------------------------------------------------------
def record(model: nn.Module) -> Record | None:
    return getattr(model, _RECORD, None)


def names(model: nn.Module) -> list[str]:
    """The model's trained parts (parameter names), in model order."""
    rec = record(model)
    return list(rec.names) if rec is not None else []


def parameters(model: nn.Module) -> list[nn.Parameter]:
    return [model.get_parameter(n) for n in names(model)]


def attach(model: nn.Module, chosen: list[str]) -> None:
    """Unfreeze the parts `chosen` and remember their current values (the base's) on the CPU."""
    if not chosen:
        return
    originals = {}
    for name in chosen:
        p = model.get_parameter(name)
        p.requires_grad_(True)
        originals[name] = p.detach().to("cpu", copy=True)
    setattr(model, _RECORD, Record(list(chosen), originals))


def assign(model: nn.Module, values: dict[str, Tensor]) -> None:
    """Copy saved part values into the model's parts (same names, checked by the caller)."""
    with torch.no_grad():
        for name, value in values.items():
            model.get_parameter(name).copy_(value)


def release(model: nn.Module, keep: bool) -> None:
    """Forget the parts (bone.unload): keep the trained values (`keep`, after a merge) or restore the
    originals; the parameters are frozen again."""
    rec = record(model)
    if rec is None:
        return
    if not keep:
        assign(model, rec.originals)
    for name in rec.names:
        model.get_parameter(name).requires_grad_(False)
    delattr(model, _RECORD)


@contextmanager
def originals(model: nn.Module) -> Iterator[None]:
    """Inside the block the parts hold their original values; the trained ones come back after."""
    rec = record(model)
    if rec is None:
        yield
        return
    trained = {n: model.get_parameter(n).detach().clone() for n in rec.names}
    assign(model, rec.originals)
    try:
        yield
    finally:
        assign(model, trained)


# --- merging ------------------------------------------------------------------------------------
def merged_value(key: str, stored: Tensor, part: Tensor) -> Tensor:
    """The part's value as written into a checkpoint in place of `stored` (same shape, stored dtype)."""
    if tuple(part.shape) != tuple(stored.shape):
        raise AdapterError(f"trained part {key} has shape {tuple(part.shape)} but the base stores {tuple(stored.shape)}: "
                           f"the adapter was made for a different base model")
    return part.to(stored.dtype).contiguous()


# --- adapter folders ----------------------------------------------------------------------------
def whole_modules(model: nn.Module, chosen: list[str]) -> list[str]:
    """The largest modules all of whose parameters are parts (PEFT's modules_to_save), in model order."""
    picked, out = set(chosen), []
    for mname, module in model.named_modules():
        if not mname or any(mname.startswith(m + ".") for m in out):
            continue
        own = [f"{mname}.{p}" for p, _ in module.named_parameters()]
        if own and all(p in picked for p in own):
            out.append(mname)
    return out


def is_peft_key(key: str, modules_to_save: list[str] | None) -> bool:
    """Whether `key` of adapter_model.safetensors is a tensor of one of PEFT's modules_to_save
    (PEFT matches a module whose name ends with a listed name)."""
    if not modules_to_save or not key.startswith(PEFT_PREFIX):
        return False
    stem = key[len(PEFT_PREFIX):]
    prefixes = [stem[:i] for i, ch in enumerate(stem) if ch == "."]
    return any(p.endswith(m) for p in prefixes for m in modules_to_save)


def split(model: nn.Module, values: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str], dict[str, Tensor]]:
    """(PEFT-layout tensors of whole modules, those module names, the other parts by name)."""
    modules = whole_modules(model, list(values))
    in_module = {n for n in values if any(n.startswith(m + ".") for m in modules)}
    peft = {PEFT_PREFIX + n: t.detach().contiguous().cpu() for n, t in values.items() if n in in_module}
    rest = {n: t.detach().contiguous().cpu() for n, t in values.items() if n not in in_module}
    return peft, modules, rest


def write_rest(path: Path, rest: dict[str, Tensor]) -> None:
    """bone_parts.safetensors in the adapter folder `path` (removed when there is nothing to write,
    so a folder saved over never keeps an old one)."""
    if rest:
        atomic_write(path / FILE, lambda tmp: save_safetensors(rest, tmp, metadata={"format": "pt"}))
    else:
        (path / FILE).unlink(missing_ok=True)


def _finite(values: dict[str, Tensor], file: Path) -> dict[str, Tensor]:
    bad = [n for n, t in values.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise AdapterError(f"{file}: trained part {bad[0]} holds NaN or inf values: the training run diverged; "
                           f"use an earlier checkpoint")
    return values


def read(path: Path, weights: Path, modules_to_save: list[str] | None) -> dict[str, Tensor]:
    """The parts saved in the adapter folder `path`: the modules_to_save tensors of `weights` and
    bone_parts.safetensors, keyed by parameter name."""
    out = {}
    try:
        if modules_to_save:
            with safe_open(weights, framework="pt") as fh:
                out = {k[len(PEFT_PREFIX):]: fh.get_tensor(k) for k in fh.keys() if is_peft_key(k, modules_to_save)}
        if (path / FILE).is_file():
            out.update(load_file(path / FILE))
    except (SafetensorError, OSError) as err:
        raise AdapterError(f"{path}: a trained-parts file is corrupt or truncated ({err})") from None
    return _finite(out, path)
