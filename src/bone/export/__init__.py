"""`bone merge`: fold an adapter into its base model, written atomically and checked.

Hugging Face folders stream shard by shard (`bone.export.hf`); RWKV `.pth` files go through
`bone.models.rwkv.merge_pth`. The merged result is written under a temporary name, compared with
base + adapter on a probe batch, and only then renamed to `out`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from .hf import check_paths, merge_folder

PROBE_SHAPE = (2, 16)  # probe batch: 2 sequences of 16 random token ids (fixed seed)


def probe_ids(vocab_size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, PROBE_SHAPE, generator=g)


@torch.no_grad()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    return model(input_ids=ids).logits.float()


def probe_difference(base: Path, adapter: Path, merged: Path) -> tuple[float, float]:
    """(max |logits(base + adapter) - logits(merged)|, max |logits|) on the probe batch, in float32.

    The two models are loaded one after the other, never together."""
    from .. import load
    from ..models import load_model

    model = load(load_model(base, dtype=torch.float32), adapter)
    ids = probe_ids(model.config.vocab_size)
    want = _logits(model, ids)
    del model
    got = _logits(load_model(merged, dtype=torch.float32), ids)
    return (got - want).abs().max().item(), want.abs().max().item()


def _tolerance(stored_dtypes: set[torch.dtype], scale: float) -> float:
    """fp32 weights merge to ~1e-5; 16-bit weights are rounded once after merging."""
    rel = 1e-4 if stored_dtypes <= {torch.float32, torch.float64} else 2e-2
    return rel * (1.0 + scale)


def _stored_dtypes(model_path: Path) -> set[torch.dtype]:
    from safetensors import safe_open

    if model_path.suffix == ".pth":
        sd = torch.load(model_path, map_location="cpu", weights_only=True, mmap=True)
        return {t.dtype for t in sd.values() if torch.is_tensor(t) and t.is_floating_point()}
    from .hf import shard_files

    out = set()
    for f in shard_files(model_path):
        with safe_open(model_path / f, framework="pt") as fh:
            out |= {fh.get_slice(k).get_dtype() for k in fh.keys()}
    names = {"F32": torch.float32, "F64": torch.float64, "BF16": torch.bfloat16, "F16": torch.float16}
    return {names[d] for d in out if d in names}


def merge(base: str | Path, adapter: str | Path, out: str | Path, *, overwrite: bool = False, check: bool = True,
          log=print) -> Path:
    """Merge `adapter` into `base` and write `out` (HF folder or `.pth`); returns `out`."""
    base, adapter, out = Path(base), Path(adapter), Path(out)
    if not base.exists():
        raise FileNotFoundError(f"--base {base} does not exist (a Hugging Face model folder or an RWKV .pth file)")
    if not adapter.is_dir():
        raise FileNotFoundError(f"--adapter {adapter} is not a folder (pass the adapter/ folder that bone train wrote)")
    rwkv = base.suffix == ".pth"
    if rwkv and out.suffix != ".pth":
        raise ValueError(f"--base is an RWKV .pth file, so --out must end in .pth too (got {out})")
    if not rwkv and not (base / "config.json").is_file():
        raise FileNotFoundError(f"--base {base} is not a Hugging Face model folder (no config.json)")
    check_paths([base, adapter], out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}" + (".pth" if rwkv else ""))
    try:
        if rwkv:
            from ..models.rwkv import merge_pth

            merge_pth(base, adapter, tmp)
            log(f"merged {adapter} into {base}")
        else:
            stats = merge_folder(base, adapter, tmp)
            log(f"merged {stats['merged']} adapted weights ({stats['tensors']} tensors, {stats['shards']} shard(s))")
        if check:
            diff, scale = probe_difference(base, adapter, tmp)
            tol = _tolerance(_stored_dtypes(base), scale)
            log(f"probe check: max |logit difference| merged vs base+adapter = {diff:.3e} "
                f"(logit scale {scale:.3g}, tolerance {tol:.1e}, batch {PROBE_SHAPE[0]}x{PROBE_SHAPE[1]}, float32)")
            if not diff <= tol:
                raise ValueError(f"the merged model differs from base + adapter by {diff:.3e} > {tol:.1e}; nothing written")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.replace(old)
            tmp.replace(out)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            tmp.replace(out)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()
    log(f"wrote {out}")
    return out
