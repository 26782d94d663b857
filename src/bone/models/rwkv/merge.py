"""merge_pth: fold a Bone adapter into a BlinkDL .pth, giving a checkpoint the official runtime loads.

A pure state-dict operation: module names of this project's RWKV model equal the checkpoint's key
prefixes, so the adapter's `blocks.0.att.key` block merges into `blocks.0.att.key.weight`, and its
trained parts (bone.parts) replace the tensors of the same name. The adapter is a bone folder or an
RWKV-PEFT `.pth` (bone.rwkv_peft): the result is what RWKV-PEFT's merge script writes for it.
Every key, its order and its dtype are kept; the arithmetic is fp32 (bone.merge_state_dict).
"""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import AdapterError, ConfigError
from ...io import read
from ...merging import merge_state_dict
from .checkpoint import atomic_save, detect_version, read_checkpoint


def merge_pth(base_pth: str | os.PathLike, adapter_dir: str | os.PathLike, out_pth: str | os.PathLike) -> Path:
    """Write base_pth with the adapter at adapter_dir (a folder or an RWKV-PEFT .pth) merged to out_pth
    (atomically). Returns out_pth."""
    base, out = Path(base_pth), Path(out_pth)
    if out.exists() and base.exists() and out.resolve() == base.resolve():
        raise ConfigError(f"refusing to overwrite the input checkpoint {base}; choose another --out path")
    sd = read_checkpoint(base)
    detect_version(sd, str(base))
    cfg, blocks, transposed, parts = read(adapter_dir)
    missing = sorted(m for m in blocks if f"{m}.weight" not in sd)
    if missing:
        raise AdapterError(f"adapter {adapter_dir} adapts module(s) {missing[:6]} that {base} does not have "
                         f"(no '<module>.weight' key): was it trained on a different model?")
    if transposed:
        raise AdapterError(f"adapter {adapter_dir} marks {sorted(transposed)[:3]} as transposed (Conv1D) layers; "
                         f"RWKV checkpoints store every projection as (out, in)")
    try:
        merged = merge_state_dict(sd, cfg, blocks, parts=parts)
    except AdapterError as err:
        raise AdapterError(f"adapter {adapter_dir} does not fit {base}: {err}") from None
    merged = {k: merged[k] for k in sd}  # the input's key order
    changed = [k for k in sd if merged[k].dtype != sd[k].dtype or merged[k].shape != sd[k].shape]
    if changed:  # merge_state_dict promises this; a merged file with other dtypes would not be faithful
        raise RuntimeError(f"merge changed dtype or shape of {changed[:5]}")
    return atomic_save(merged, out)
