"""RWKV-PEFT's Bone / DiSHA checkpoints: one `torch.save`d dict, read and written.

What RWKV-PEFT's training (`run_bone.sh` / `run_disha.sh`) saves and its merge scripts
(`merge_bone.py` / `merge_disha.py`) and `--disha_config '{"load": ...}'` read:
  <module>.disha   (releases since 2025-02; `<module>.bone` from 2024-11 to 2025-02) the blocks:
                   2-D (r, out) = its mode "bone" = bone's shard; 3-D (in/r, r, r) = its mode "bat"
                   = bone's row (`Variant.rwkv_peft_mode`)
  every other key  a trained part under the base checkpoint's own name (`--train_parts time ln`:
                   e.g. blocks.0.att.time_maa_x, blocks.2.ln1.weight; emb.weight / head.weight on request)
Its merge copies the parts over the base's tensors and folds each block into `<module>.weight`
(see MATH.md); bone merges such a file with the same arithmetic (`bone.merge_state_dict`).
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from . import variants
from .config import BoneConfig
from .errors import AdapterError

SUFFIXES = (".disha", ".bone")  # the block key of current releases first (what `write` uses)
RWKV_MODULE = re.compile(r"blocks\.\d+\.(att|ffn)\.\w+")  # an RWKV checkpoint's projections: blocks.N.att|ffn.NAME
_RANKS = {2: "bone", 3: "bat"}  # block rank -> RWKV-PEFT mode


def is_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a file this module reads (a `.pth`; `read` says when it is not an adapter)."""
    path = Path(path)
    return path.suffix == ".pth" and path.is_file()


def _load(path: Path) -> dict[str, Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not zipfile.is_zipfile(path):  # what torch.save writes
            raise AdapterError(f"{path} is not a readable torch file (corrupt or truncated?)") from None
        raise AdapterError(f"{path} holds objects other than plain tensors and cannot be loaded safely "
                           f"(weights_only=True): {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise AdapterError(f"{path} is not a readable torch file (corrupt or truncated?): {err}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise AdapterError(f"{path} is not a dict of tensors: not an RWKV-PEFT checkpoint")
    return sd


def _mode(shape: tuple[int, ...]) -> tuple[str, int] | None:
    """(RWKV-PEFT mode, r) of a block of `shape`, or None when it fits neither mode."""
    mode = _RANKS.get(len(shape))
    if mode == "bone":
        return mode, shape[0]
    if mode == "bat" and shape[1] == shape[2]:
        return mode, shape[1]
    return None


def _variant(mode: str) -> variants.Variant:
    return next(v for v in variants.VARIANTS.values() if v.rwkv_peft_mode == mode)


def _blocks(sd: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """{module: block} of the file; one key suffix only."""
    found = {s: [k for k in sd if k.endswith(s)] for s in SUFFIXES}
    if all(found.values()):
        a, b = (found[s][0] for s in SUFFIXES)
        raise AdapterError(f"{path} mixes '.disha' and '.bone' block keys (e.g. {a}, {b}): an RWKV-PEFT release "
                           f"writes one kind, so the file was put together from two runs; keep one run's blocks")
    suffix = next((s for s in SUFFIXES if found[s]), None)
    if suffix is None:
        if "emb.weight" in sd and any(k.endswith(".att.key.weight") for k in sd):
            raise AdapterError(f"{path} is a full RWKV model ({len(sd)} tensors with emb.weight and the projection "
                               f"weights), not an RWKV-PEFT adapter: pass it as the base model (--base / --model) and "
                               f"the file RWKV-PEFT saved in its proj_dir (rwkv-N.pth, with '.disha' keys) as --adapter")
        raise AdapterError(f"{path} holds no '<module>.disha' or '<module>.bone' blocks (first keys: {list(sd)[:4]}): "
                           f"not an RWKV-PEFT Bone/DiSHA checkpoint (its LoRA, PiSSA and state files are not Bone)")
    return {k[: -len(suffix)]: sd[k] for k in found[suffix]}


def read(path: str | os.PathLike) -> tuple[BoneConfig, dict[str, Tensor], dict[str, Tensor]]:
    """(config, {module: block}, {parameter name: trained part}) of an RWKV-PEFT checkpoint.

    The variant and r come from the block shapes; the config adapts exactly the file's modules."""
    path = Path(path)
    sd = _load(path)
    blocks = _blocks(sd, path)
    kinds = {m: _mode(tuple(b.shape)) for m, b in blocks.items()}
    odd = [f"{m} {tuple(blocks[m].shape)}" for m, k in kinds.items() if k is None]
    if odd:
        raise AdapterError(f"{path}: block(s) {odd[:3]} fit neither RWKV-PEFT mode: 'bone' blocks are 2-D (r, out), "
                           f"'bat' blocks 3-D (in/r, r, r); the file is not an RWKV-PEFT Bone/DiSHA checkpoint")
    if len(set(kinds.values())) > 1:
        shown = {k: m for m, k in kinds.items()}
        raise AdapterError(f"{path} mixes block kinds ({', '.join(f'{m}: mode {k[0]!r} r={k[1]}' for k, m in shown.items())}); "
                           f"one RWKV-PEFT run trains one mode and one r")
    mode, r = next(iter(kinds.values()))
    names = {k for k in sd if k.endswith(SUFFIXES)}
    parts = {k: v for k, v in sd.items() if k not in names}
    both = sorted(k for k in parts if k.endswith(".weight") and k[: -len(".weight")] in blocks)
    if both:
        raise AdapterError(f"{path} holds both the block and the weight of {both[0][: -len('.weight')]} "
                           f"({len(both)} layer(s)): a full training state, not the adapter RWKV-PEFT saves; "
                           f"a layer is either adapted or trained in full")
    bad = [k for k, t in sd.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise AdapterError(f"{path}: {bad[0]} holds NaN or inf values: the training run diverged; use an earlier checkpoint")
    cfg = BoneConfig(r=r, variant=_variant(mode).name, target_modules=sorted(blocks))
    return cfg, blocks, parts


def _natural(key: str) -> tuple:
    """Sort key putting blocks.2 before blocks.10."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"\.", key))


def state_dict(cfg: BoneConfig, blocks: dict[str, Tensor], parts: dict[str, Tensor],
               dtype: torch.dtype) -> dict[str, Tensor]:
    """The dict RWKV-PEFT saves for this adapter: `<module>.disha` blocks and the parts, every tensor
    in `dtype`, keys in natural order. The variant must have an RWKV-PEFT form (`rwkv_peft_mode`)."""
    variant = variants.get(cfg.variant)
    if variant.rwkv_peft_mode is None:
        raise AdapterError(no_form(cfg))
    out = {f"{m}{SUFFIXES[0]}": b for m, b in blocks.items()}
    out.update(parts)
    return {k: out[k].detach().to("cpu", dtype).contiguous().clone() for k in sorted(out, key=_natural)}


def no_form(cfg: BoneConfig) -> str:
    """Why an adapter of cfg's variant cannot be written as an RWKV-PEFT checkpoint."""
    modes = {v.name: v.rwkv_peft_mode for v in variants.VARIANTS.values() if v.rwkv_peft_mode}
    return (f"variant {cfg.variant!r} has no RWKV-PEFT form: RWKV-PEFT trains only its modes "
            f"{', '.join(f'{m!r} (bone {n})' for n, m in modes.items())}; train with variant "
            f"{' or '.join(modes)} to use RWKV-PEFT's tools, or fold this adapter into the model with `bone merge`")
