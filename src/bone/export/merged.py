"""The `merged` target (`bone merge`): fold an adapter into its base model's files, checked.

The method that owns the adapter folder (`bone.methods.owner`) says how it merges: a Bone adapter
is handed to the base's family (`bone.models.family`), which streams Hugging Face folders shard by
shard and RWKV `.pth` files through `merge_pth`; a baseline (LoRA, PiSSA, DoRA, full) is loaded
onto the base, folded by its method and written by the family. The result is written under a
temporary name, compared with base + adapter on a probe batch, and only then renamed to `out`.
torch is imported when a merge runs, so `bone merge --help` and `bone export --help` start fast.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, MissingPathError, OutputExistsError
from ..fs import remove_stale, replace_dir, temp_sibling
from .target import ExportTarget, check_paths

if TYPE_CHECKING:
    import torch

PROBE_SHAPE = (2, 16)  # probe batch: 2 sequences of 16 random token ids (fixed seed)


def probe_ids(vocab_size: int) -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, PROBE_SHAPE, generator=g)


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    import torch

    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def probe_difference(base: Path, adapter: Path, merged: Path) -> tuple[float, float]:
    """(max |logits(base + adapter) - logits(merged)|, max |logits|) on the probe batch, in float32.

    The two models are loaded one after the other, never together."""
    import torch

    from ..methods import owner
    from ..models import load_model

    model = owner(adapter).load(load_model(base, dtype=torch.float32), adapter)
    ids = probe_ids(model.config.vocab_size)
    want = _logits(model, ids)
    del model
    got = _logits(load_model(merged, dtype=torch.float32), ids)
    return (got - want).abs().max().item(), want.abs().max().item()


def tolerance(stored_dtypes: set[torch.dtype], scale: float) -> float:
    """fp32 weights merge to ~1e-5; 16-bit weights are rounded once after merging."""
    import torch

    rel = 1e-4 if stored_dtypes <= {torch.float32, torch.float64} else 2e-2
    return rel * (1.0 + scale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def merge(base: str | Path, adapter: str | Path, out: str | Path, *, overwrite: bool = False, check: bool = True,
          log=print) -> Path:
    """Merge `adapter` into `base` and write `out` (HF folder or `.pth`); returns `out`."""
    from ..methods import owner
    from ..models import family_of, resolve

    base, adapter, out = Path(resolve(base)), Path(adapter), Path(out)
    if not base.exists():
        raise MissingPathError(f"--base {base} does not exist (a Hugging Face model folder, an RWKV .pth file "
                               f"or an embedded name such as smollm2-135m)")
    if not adapter.is_dir():
        raise MissingPathError(f"--adapter {adapter} is not a folder (pass the adapter/ folder that bone train wrote)")
    method = owner(adapter)
    method.require()
    family = family_of(base)
    family.check_merge(base, out)
    check_paths([base, adapter], out, overwrite)
    if out.exists() and out.is_dir() != base.is_dir():
        kind = "folder" if out.is_dir() else "file"
        raise OutputExistsError(f"--out {out} is a {kind}, but the merged model is a {'folder' if base.is_dir() else 'file'}: "
                                f"--overwrite only replaces a merged model of the same kind; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    tmp = temp_sibling(out, "" if base.is_dir() else out.suffix)  # a file keeps its suffix: families go by it
    try:
        log(method.export_merged(base, adapter, tmp))
        if check:
            diff, scale = probe_difference(base, adapter, tmp)
            tol = tolerance(family.stored_dtypes(base), scale)
            log(f"probe check: max |logit difference| merged vs base+adapter = {diff:.3e} "
                f"(logit scale {scale:.3g}, tolerance {tol:.1e}, batch {PROBE_SHAPE[0]}x{PROBE_SHAPE[1]}, float32)")
            if not diff <= tol:
                raise ConfigError(f"the merged model differs from base + adapter by {diff:.3e} > {tol:.1e}; nothing written")
        if tmp.is_dir():
            replace_dir(tmp, out)
        else:
            os.replace(tmp, out)
    finally:
        _remove(tmp)
    log(f"wrote {out}")
    return out


class MergedTarget(ExportTarget):
    name = "merged"
    about = "the base model with the adapter folded in (HF folder or RWKV .pth), checked on a probe batch"
    needs_base = True

    def add_arguments(self, parser):
        parser.add_argument("--no-check", action="store_true", help="skip the probe-batch comparison with base + adapter")

    def export(self, adapter, out, *, base, options, overwrite, log):
        return merge(base, adapter, out, overwrite=overwrite, check=not options.no_check, log=log)
