"""The `merged` target (`bone merge`): fold an adapter into its base model's files, checked.

The method that owns the adapter folder (`bone.methods.owner`) says how it merges: a Bone adapter
is handed to the base's family (`bone.models.family`), which streams Hugging Face folders shard by
shard and RWKV `.pth` files through `merge_pth`; a baseline (LoRA, PiSSA, DoRA, full) is loaded
onto the base, folded by its method and written by the family. The result is written under a
temporary name, compared with base + adapter on a probe batch, and only then renamed to `out`.

An adapter trained on a quantized base (`quantize`, as it was loaded for training) merges either
into the full-precision base (the usual QLoRA practice: the probe check runs against the
full-precision base + adapter, and the difference to the quantized base + adapter, the cost of
that choice, is reported) or, with `dequantized=True`, into the dequantized weights it was
trained against (checked against the quantized base + adapter; the base's dtypes are kept).
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


def probe_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """The float32 logits of `model` (put in eval mode) on `ids`, without gradients."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def probe_difference(base: Path, adapter: Path, merged: Path, quantize=None, dequantized: bool = False) -> tuple[float, float]:
    """(max |logits(base + adapter) - logits(merged)|, max |logits|) on the probe batch, in float32.

    quantize: load the base quantized so ("nf4", "fp4", "int8" or a QuantConfig), as the adapter was
    trained; dequantized: then replace its quantized weights by their fp32 dequantized values (what a
    merge into the dequantized weights must equal: bitsandbytes' int8 product also rounds the
    activations). The two models are loaded one after the other, never together."""
    import torch

    from ..methods import owner
    from ..models import load_model
    from ..quant.convert import dequantize

    model = owner(adapter).load(load_model(base, dtype=torch.float32, quantize=quantize), adapter)
    if dequantized:
        dequantize(model)
    ids = probe_ids(model.config.vocab_size)
    want = probe_logits(model, ids)
    del model
    got = probe_logits(load_model(merged, dtype=torch.float32), ids)
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


def _write_dequantized(family, base: Path, adapter: Path, dest: Path, quant, method) -> str:
    """base loaded with `quant` + adapter, dequantized and merged, written to `dest` in base's format."""
    import torch

    from ..models import load_model
    from ..quant.convert import dequantize

    model = method.load(load_model(base, dtype=torch.float32, quantize=quant), adapter)
    dequantize(model)
    family.save_model(method.merged(model), base, dest)
    return f"merged {adapter} into the {quant.method}-dequantized weights of {base}"


def _check(base: Path, adapter: Path, tmp: Path, family, quant, dequantized: bool, log) -> None:
    """The probe checks of `merge` (see the module docstring); raises when the merge is wrong."""
    what = f"{quant.method}-dequantized base" if dequantized else "base"
    diff, scale = probe_difference(base, adapter, tmp, quant if dequantized else None, dequantized)
    tol = tolerance(family.stored_dtypes(base), scale)
    log(f"probe check: max |logit difference| merged vs {what}+adapter = {diff:.3e} "
        f"(logit scale {scale:.3g}, tolerance {tol:.1e}, batch {PROBE_SHAPE[0]}x{PROBE_SHAPE[1]}, float32)")
    if not diff <= tol:
        raise ConfigError(f"the merged model differs from {what} + adapter by {diff:.3e} > {tol:.1e}; nothing written")
    if quant is not None:
        cost, _ = probe_difference(base, adapter, tmp, quant)
        choice = ("merging into the dequantized weights" if dequantized else
                  "merging into the full-precision base (merge into the dequantized weights instead for the least)")
        log(f"merged vs {quant.method} base+adapter (as trained, bitsandbytes' own product) = {cost:.3e}: the cost of {choice}")


def merge(base: str | Path, adapter: str | Path, out: str | Path, *, overwrite: bool = False, check: bool = True,
          log=print, quantize=None, dequantized: bool = False) -> Path:
    """Merge `adapter` (a folder of any method, or an RWKV-PEFT `.pth`) into `base` and write `out`
    (HF folder or `.pth`); returns `out`.

    quantize: how the adapter's training loaded the base ("nf4", "fp4", "int8", a QuantConfig or None).
    dequantized: merge into the dequantized weights the adapter was trained against (needs quantize)."""
    from ..methods import owner
    from ..models import family_of, resolve
    from ..quant.config import parse

    quant = parse(quantize)
    if dequantized and quant is None:
        raise ConfigError("a merge into the dequantized weights needs the quantization the adapter was trained "
                          "with (quantize='nf4', 'fp4' or 'int8')")
    if quant is not None:
        from ..quant.bnb import require

        require()

    base, adapter, out = Path(resolve(base)), Path(adapter), Path(out)
    if not base.exists():
        raise MissingPathError(f"--base {base} does not exist (a Hugging Face model folder, an RWKV .pth file "
                               f"or an embedded name such as smollm2-135m)")
    if not adapter.exists():
        raise MissingPathError(f"--adapter {adapter} does not exist (pass the adapter/ folder that bone train wrote, "
                               f"or an RWKV-PEFT .pth checkpoint)")
    method = owner(adapter)  # one line for a path that holds no adapter of any method
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
        if dequantized:
            log(_write_dequantized(family, base, adapter, tmp, quant, method))
        else:
            log(method.export_merged(base, adapter, tmp))
        if check:
            _check(base, adapter, tmp, family, quant, dequantized, log)
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
        parser.add_argument("--quantize", choices=("nf4", "fp4", "int8"),
                            help="the quantization the adapter was trained on (QBone): the merge also reports its "
                                 "difference to that quantized base + adapter")
        parser.add_argument("--dequantized", action="store_true",
                            help="with --quantize: merge into the dequantized weights the adapter was trained against "
                                 "(default: into the full-precision --base)")

    def export(self, adapter, out, *, base, options, overwrite, log):
        return merge(base, adapter, out, overwrite=overwrite, check=not options.no_check, log=log,
                     quantize=options.quantize, dequantized=options.dequantized)
