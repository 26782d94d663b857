"""BlinkDL `.pth` checkpoints: read (with validation), detect the version, size a model, write back.

A checkpoint is a `torch.save`d dict of tensors keyed like `emb.weight`, `blocks.N.att.key.weight`,
`head.weight`. Version detection: `blocks.0.att.r_k` -> RWKV-7 "x070"; `blocks.0.att.time_maa_x`
-> RWKV-6 "x060". Sizes come from tensor shapes only.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from ...errors import MissingPathError, ModelError
from ...fs import save_torch
from .config import RWKVConfig
from .modeling import RWKVForCausalLM

_OLDER = {"att.time_mix_k": "RWKV-4/5 (time_mix_k)", "att.time_first": "RWKV-4/5 (time_first)"}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """The raw state dict of a .pth, loaded with weights_only=True. Raises on anything but tensors."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"RWKV checkpoint {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelError(f"{path} holds objects other than plain tensors and cannot be loaded safely "
                         f"(weights_only=True): {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ModelError(f"{path} is not a readable torch checkpoint (corrupt or truncated?): {err}") from None
    if not isinstance(sd, dict):
        raise ModelError(f"{path} holds a {type(sd).__name__}, not a dict of tensors: not an RWKV checkpoint")
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise ModelError(f"{path} has non-tensor entries {bad[:5]}: not a BlinkDL RWKV checkpoint "
                         f"(converted '_strategy' files of the rwkv runtime are not supported)")
    return sd


def detect_version(sd: dict[str, Tensor], where: str = "checkpoint") -> str:
    """"rwkv7" (x070) or "rwkv6" (x060); clear errors for non-RWKV and other RWKV versions."""
    if "emb.weight" not in sd or "blocks.0.att.key.weight" not in sd:
        raise ModelError(f"{where} is not an RWKV checkpoint: it has no 'emb.weight' / 'blocks.0.att.key.weight' "
                         f"(first keys: {list(sd)[:5]})")
    if "blocks.0.att.r_k" in sd:
        return "rwkv7"
    if "blocks.0.att.time_maa_x" in sd:
        return "rwkv6"
    for key, name in _OLDER.items():
        if f"blocks.0.{key}" in sd:
            raise ModelError(f"{where} is an {name} checkpoint; only RWKV-7 (x070) and RWKV-6 (x060) are supported")
    raise ModelError(f"{where} is an RWKV checkpoint of an unknown version (no 'blocks.0.att.r_k' of x070, "
                     f"no 'blocks.0.att.time_maa_x' of x060); only x070 and x060 are supported")


def _dim(sd: dict[str, Tensor], key: str, axis: int, where: str) -> int:
    if key not in sd:
        raise ModelError(f"{where} is missing key {key!r} needed to read the model size")
    return int(sd[key].shape[axis])


def config_from_state_dict(sd: dict[str, Tensor], where: str = "checkpoint") -> RWKVConfig:
    """An RWKVConfig whose sizes are read from the tensor shapes."""
    model_type = detect_version(sd, where)
    layers = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.")}
    vocab, C = sd["emb.weight"].shape
    common = dict(n_layer=max(layers) + 1, n_embd=int(C), vocab_size=int(vocab),
                  dim_ffn=_dim(sd, "blocks.0.ffn.key.weight", 0, where))
    if model_type == "rwkv7":
        N = sd["blocks.0.att.r_k"].shape[1]
        v1 = "blocks.1.att.v1" if "blocks.1.att.v1" in sd else "blocks.0.att.v1"
        return RWKVConfig("rwkv7", head_size=int(N), decay_lora=_dim(sd, "blocks.0.att.w1", 1, where),
                          aaa_lora=_dim(sd, "blocks.0.att.a1", 1, where), mv_lora=_dim(sd, v1, 1, where),
                          gate_lora=_dim(sd, "blocks.0.att.g1", 1, where),
                          layer0_v_params="blocks.0.att.v1" in sd, **common)
    N = _dim(sd, "blocks.0.att.time_faaaa", 1, where)
    mix = _dim(sd, "blocks.0.att.time_maa_w1", 1, where)
    if mix % 5:
        raise ModelError(f"{where}: blocks.0.att.time_maa_w1 has {mix} columns, not a multiple of 5 (x060 layout)")
    return RWKVConfig("rwkv6", head_size=int(N), decay_lora=_dim(sd, "blocks.0.att.time_decay_w1", 1, where),
                      mix_lora=mix // 5, **common)


def check_layout(model: nn.Module, sd: dict[str, Tensor], where: str = "checkpoint") -> None:
    """Raise naming every missing, unexpected or mis-shaped key of `sd` against `model`."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    shapes = [f"{k}: {tuple(sd[k].shape)} (expected {want[k]})" for k in want if k in sd and tuple(sd[k].shape) != want[k]]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:12]}")
    if extra:
        problems.append(f"unexpected keys ({len(extra)}): {extra[:12]} (state-tuned or DeepEmbed variants are not supported)")
    if shapes:
        problems.append(f"shape mismatches: {shapes[:8]}")
    if problems:
        raise ModelError(f"{where} does not match the {model.config.version} layout it was detected as:\n  "
                         + "\n  ".join(problems))


def load_rwkv(path: str | os.PathLike, dtype: torch.dtype | str | None = None, chunk_size: int | None = None) -> RWKVForCausalLM:
    """Build this project's RWKV model from a BlinkDL .pth (x070 or x060).

    dtype: parameter dtype, a torch.dtype or its name ("bfloat16"); None = fp32.
    chunk_size: WKV chunk length of the training form; None = RWKVConfig's default."""
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ModelError(f"dtype={dtype!r} is not a torch dtype name (use e.g. 'float32' or 'bfloat16')")
        dtype = getattr(torch, dtype)
    sd = read_checkpoint(path)
    cfg = config_from_state_dict(sd, str(path))
    if chunk_size is not None:
        cfg = dataclasses.replace(cfg, chunk_size=chunk_size)
    with torch.device("meta"):
        model = RWKVForCausalLM(cfg)
    check_layout(model, sd, str(path))
    model.load_state_dict(sd, assign=True)
    return model.to(dtype or torch.float32)


def atomic_save(sd: dict[str, Tensor], path: str | os.PathLike) -> Path:
    """torch.save to a temporary file in the target folder, then os.replace (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_torch(sd, path)


def save_pth(model: RWKVForCausalLM, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write `model` as a BlinkDL .pth (same keys as the loaded file), atomically.

    dtype: cast every tensor (None keeps each parameter's dtype). A model still carrying Bone
    adapters is refused: merge them (bone.merge + bone.unload) or use merge_pth."""
    from ...inject import bone_layers

    adapted = [name for name, _ in bone_layers(model)]
    if adapted:
        raise ModelError(f"the model still has Bone adapters ({adapted[:3]}...); call bone.merge(model) "
                         f"and bone.unload(model) first, or use bone.models.rwkv.merge_pth")
    sd = model.state_dict()
    out = {k: v.detach().to("cpu", dtype or v.dtype).contiguous().clone() for k, v in sd.items()}
    return atomic_save(out, path)


def save_like(model: RWKVForCausalLM, base: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write `model` as a .pth with exactly `base`'s keys, key order and per-key dtypes, atomically."""
    from ...inject import bone_layers

    adapted = [name for name, _ in bone_layers(model)]
    if adapted:
        raise ModelError(f"the model still has Bone adapters ({adapted[:3]}...); call bone.merge(model) and bone.unload(model) first")
    ref = torch.load(base, map_location="cpu", weights_only=True, mmap=True)
    sd = model.state_dict()
    if set(sd) != set(ref):
        raise ModelError(f"the model's keys differ from {base}'s: {sorted(set(sd) ^ set(ref))[:5]}")
    return atomic_save({k: sd[k].detach().to("cpu", ref[k].dtype).contiguous().clone() for k in ref}, path)
