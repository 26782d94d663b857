"""The `lora` target: a PEFT LoRA folder that LoRA servers (vLLM, TGI, LoRAX) and PEFT load.

    bone export --to lora --adapter DIR --out OUT [--base M] [--rank K] [--max-error E] [--dtype T]

OUT holds adapter_config.json ("peft_type": "LORA", "r", "lora_alpha" = r so the scaling is 1,
"target_modules" = the adapted modules' full names), adapter_model.safetensors
("base_model.model.<module>.lora_A.weight" `(r, in)` and ".lora_B.weight" `(out, r)`) and
export_report.json (rank, per-layer errors, probe check, serving notes).

- shard/mini are LoRA exactly (`Variant.lora_factors`: B = M^T, A = tiled identities, rank r); they
  need the base only for the layers' input widths and the probe check, and use the base named in
  the adapter's adapter_config.json when --base is left out.
- col/row updates W' - W depend on W: they go through a truncated SVD (`lowrank`) at rank K, and need
  --base. Default K: the smallest rank keeping every layer's relative Frobenius error <= --max-error.
  A layer narrower than K (min(out, in) < K) is written at full rank, exactly, zero-padded to K.
- Every export is loaded back with `PeftModel.from_pretrained` and compared with the Bone model on
  the probe batch of `merged`; an exact export that differs by more than 1e-5 relative is not written.

Why the default bound is 0.3 (each layer keeps >= 91% of its update's energy, 1 - 0.3^2): a trained
col update is far from low-rank. On the demo adapter (SmolLM2-135M, col r=64, 80 steps; the fine-tune
moves the probe logits by 8.97) the bounds 0.5 / 0.3 / 0.1 need ranks 219 / 368 / 531 and leave
probe differences of 0.98 / 0.41 / 0.13: 0.3 is the loosest of these that stays within 5% of the
fine-tune's own effect, and 0.1 would need a rank above 512, which vLLM cannot serve. Task accuracy
is far less sensitive (rank 16 and 64 kept the demo's held-out accuracy): --rank 64 is the usual
serving choice, with the reported errors to judge it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
from dataclasses import dataclass, field, fields
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import ConfigError, MissingPathError, ModelError, OutputExistsError, require
from ..fs import make_temp_dir, replace_dir, save_safetensors, write_json
from .merged import PROBE_SHAPE, probe_ids, probe_logits
from .target import ExportTarget, check_paths

if TYPE_CHECKING:  # torch is imported when an export runs, so `bone export --help` starts fast
    import torch

DEFAULT_MAX_ERROR = 0.3  # default-rank bound on each layer's relative Frobenius error of W' - W (see below)
EXACT_TOLERANCE = 1e-5  # an exact export's max |logit difference| / max |logit| on the probe batch
REPORT_FILE = "export_report.json"
DTYPES = ("float32", "bfloat16", "float16")  # names of torch dtypes for --dtype
# vLLM's --max-lora-rank accepts only these values (`MaxLoRARanks = Literal[...]` in vllm/config/lora.py, as
# the docs.vllm.ai API reference of v0.14 and v0.22 shows); its default is 16. Ranks up to 64 are what LoRA
# servers are commonly configured for.
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_DEFAULT_RANK = 16
COMMON_MAX_RANK = 64


@dataclass(frozen=True)
class LoraOptions:
    """`bone export --to lora` options (the metadata is the argparse spec; help is the --help)."""

    rank: int | None = field(default=None, metadata={"type": int, "metavar": "K", "help": (
        "LoRA rank. shard/mini: leave out (exact at their r) or lower it (truncated SVD). col/row: default "
        "the smallest rank that keeps every layer's relative error under --max-error")})
    max_error: float = field(default=DEFAULT_MAX_ERROR, metadata={"type": float, "metavar": "E", "help": (
        f"col/row default rank: bound on each layer's relative Frobenius error |dW - BA| / |dW| "
        f"(default {DEFAULT_MAX_ERROR})")})
    dtype: str | None = field(default=None, metadata={"choices": list(DTYPES), "help": (
        "dtype of the written factors (default: the adapter's dtype)")})

    def __post_init__(self):
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ConfigError(f"--rank must be a positive integer, got {self.rank!r}")
        if not 0 < self.max_error < 1:
            raise ConfigError(f"--max-error must be between 0 and 1 (a relative error), got {self.max_error!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {list(DTYPES)}, got {self.dtype!r}")

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> "LoraOptions":
        return cls(**{f.name: getattr(ns, f.name, f.default) for f in fields(cls)})


@dataclass
class LayerExport:
    """One adapted layer's factors as written and their measured error."""

    shape: tuple[int, int]
    rank: int  # rank before zero-padding
    b: torch.Tensor
    a: torch.Tensor
    error: float


def _recorded_base(adapter: Path) -> Path | None:
    """The local base model named in the adapter's adapter_config.json, if it exists here."""
    from ..io import CONFIG_FILE
    from ..models import resolve

    try:
        name = json.loads((adapter / CONFIG_FILE).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    path = Path(resolve(name)) if isinstance(name, str) and name else None
    return path if path is not None and path.exists() else None


def _choose_base(cfg, adapter: Path, base, log) -> Path:
    from .. import variants

    variant = variants.get(cfg.variant)
    if base is None and not variant.exact_lora:
        raise ConfigError(
            f"variant {cfg.variant!r} has no exact LoRA form (its update W' - W depends on the base weights W): "
            f"pass --base M (the model the adapter was trained on) to export it through a truncated SVD")
    if base is None:
        base = _recorded_base(adapter)
        if base is None:
            raise ConfigError("a LoRA folder needs each layer's input width, which the adapter folder does not store "
                              "and its adapter_config.json names no local base model: pass --base M")
        log(f"base: {base} (named in the adapter's adapter_config.json)")
    from ..models import resolve

    base = Path(resolve(base))
    if not base.exists():
        raise MissingPathError(f"--base {base} does not exist (a Hugging Face model folder or an embedded name such "
                               f"as smollm2-135m)")
    return base


def _load_bone_model(base: Path, adapter: Path):
    import torch
    from transformers import PreTrainedModel

    from ..io import load
    from ..models import load_model

    model = load_model(base, dtype=torch.float32)
    if not isinstance(model, PreTrainedModel):
        raise ModelError(f"--base {base} is not a Hugging Face model ({type(model).__name__}): PEFT and LoRA servers "
                         f"load LoRA folders onto Hugging Face models only; use --to merged for this model")
    return load(model, adapter)


def _rank(cfg, opts: LoraOptions, shapes: dict[str, tuple[int, int]]) -> int | None:
    """The requested rank after checks; None = the variant's exact rank or the default rule."""
    from .. import variants

    variant = variants.get(cfg.variant)
    k = opts.rank
    if k is None or (variant.exact_lora and k == cfg.r):
        return None
    if variant.exact_lora and k > cfg.r:
        raise ConfigError(f"--rank {k} is larger than the adapter's rank: {cfg.variant} adapters are LoRA of rank "
                          f"r={cfg.r} exactly; leave --rank out (or lower it to approximate)")
    name, (out, in_) = max(shapes.items(), key=lambda item: min(item[1]))
    if k > min(out, in_):
        raise ConfigError(f"--rank {k} is larger than every adapted layer allows: the widest, {name} (out={out}, "
                          f"in={in_}), has rank at most {min(out, in_)}; choose --rank <= {min(out, in_)}")
    return k


def _delta(layer) -> torch.Tensor:
    """W' - W `(out, in)` in float64."""
    adapter = layer.adapter()
    block = adapter.block.detach().double()
    factors = adapter.variant.lora_factors(block, layer.out_features, layer.in_features)
    if factors is not None:
        return factors[0] @ factors[1]
    w = layer.weight_oi().detach().double()
    return adapter.variant.merged(w, block) - w


@dataclass
class Built:
    """An export computed in memory: the factors, how the rank was chosen, the Bone model's probe logits."""

    rank: int
    exact: bool  # B @ A == W' - W for every layer, to the bit
    rule: str  # how the rank was chosen, for the report
    dtype: torch.dtype
    layers: dict[str, LayerExport]
    config: dict  # adapter_config.json
    ids: torch.Tensor  # the probe batch
    want: torch.Tensor  # the Bone model's logits on it
    update: float  # max |logits(Bone) - logits(base)|: how far the fine-tune itself moves the logits


def _factors(layers, rank: int | None, opts: LoraOptions, dtype: torch.dtype):
    """(LoRA rank, exact, {module: LayerExport}) for the Bone layers `layers` [(name, BoneLinear)]."""
    from . import lowrank

    exact = rank is None and all(layer.adapter().variant.exact_lora for _, layer in layers)
    if exact:
        rank = max(layer.adapter().cfg.r for _, layer in layers)
    elif rank is None:  # the default rule: one pass for the spectra, one for the factors
        rank = max(1, max(lowrank.rank_needed(_delta(layer), opts.max_error) for _, layer in layers))
    done = {}
    for name, layer in layers:
        out, in_ = layer.out_features, layer.in_features
        dw = _delta(layer)
        if exact:
            adapter = layer.adapter()
            b, a = adapter.variant.lora_factors(adapter.block.detach(), out, in_)
        else:
            b, a = lowrank.truncated(dw, min(rank, out, in_))
        b, a = b.to(dtype), a.to(dtype)
        done[name] = LayerExport((out, in_), b.shape[1], *lowrank.padded(b, a, rank), lowrank.relative_error(dw, b, a))
    exact = exact and all(le.error == 0 for le in done.values())  # not when --dtype rounded the factors
    return rank, exact, done


def build(cfg, adapter: Path, base: Path, opts: LoraOptions, dtype: torch.dtype) -> Built:
    """Load base + adapter (checking that they fit), factor every layer, and run the probe batch."""
    from ..inject import bone_layers
    from ..merging import disabled

    model = _load_bone_model(base, adapter)
    layers = list(bone_layers(model))
    rank = _rank(cfg, opts, {n: (layer.out_features, layer.in_features) for n, layer in layers})
    rank, exact, done = _factors(layers, rank, opts, dtype)
    rule = (f"exact ({cfg.variant} r={cfg.r} is LoRA of rank r)" if exact else
            f"--rank {opts.rank}" if opts.rank is not None else
            f"smallest rank with every layer's relative Frobenius error <= {opts.max_error} (--max-error)")
    config = peft_lora_config(model, rank, list(done), any(layer.transposed for _, layer in layers))
    ids = probe_ids(model.config.vocab_size)
    want = probe_logits(model, ids)
    with disabled(model):
        update = (want - probe_logits(model, ids)).abs().max().item()
    return Built(rank, exact, rule, dtype, done, config, ids, want, update)


def write(built: Built, folder: Path) -> None:
    """adapter_model.safetensors (PEFT's key names) and adapter_config.json into `folder`."""
    from ..io import CONFIG_FILE, WEIGHTS_FILE

    tensors = {}
    for name, le in built.layers.items():
        tensors[f"base_model.model.{name}.lora_A.weight"] = le.a.contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = le.b.contiguous()
    save_safetensors(tensors, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    write_json(folder / CONFIG_FILE, built.config)


def probe_check(built: Built, folder: Path, base: Path, peft) -> tuple[float, float]:
    """(max |logit difference|, max |logit|): `folder` loaded by PEFT onto a fresh base vs the Bone model.
    Raises for an exact export that differs by more than EXACT_TOLERANCE (relative)."""
    import torch

    from ..models import load_model

    got = probe_logits(peft.PeftModel.from_pretrained(load_model(base, dtype=torch.float32), str(folder)), built.ids)
    diff, scale = (got - built.want).abs().max().item(), built.want.abs().max().item()
    if built.exact and not diff <= EXACT_TOLERANCE * scale:
        raise RuntimeError(f"the exact LoRA export differs from the Bone model by {diff:.3e} on the probe batch "
                           f"(logit scale {scale:.3g}): a bug in bone's LoRA export; nothing written")
    return diff, scale


def peft_lora_config(model, rank: int, names: list[str], fan_in_fan_out: bool) -> dict:
    """The adapter_config.json of a PEFT LoRA of rank `rank` on the modules `names`, scaling 1."""
    causal = type(model).__name__.endswith("ForCausalLM")
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM" if causal else None,
        "base_model_name_or_path": getattr(model.config, "_name_or_path", None) or None,
        "revision": None,
        "inference_mode": True,
        "r": rank,
        "lora_alpha": rank,  # scaling = lora_alpha / r = 1
        "use_rslora": False,
        "use_dora": False,
        "lora_dropout": 0.0,
        "target_modules": sorted(names),
        "fan_in_fan_out": fan_in_fan_out,  # Conv1D (GPT-2) weights are stored (in, out)
        "bias": "none",
        "modules_to_save": None,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


def serving_note(rank: int) -> str:
    """What a LoRA server needs for `rank`, and what to do when it is above the common limits."""
    fit = next((v for v in VLLM_RANKS if v >= rank), None)
    if fit is None:
        return (f"rank {rank} is above {VLLM_RANKS[-1]}, the largest --max-lora-rank vLLM accepts: vLLM cannot serve "
                f"it; export with a lower --rank (the errors are reported) or serve a merged model (--to merged)")
    note = (f"vLLM needs --max-lora-rank {fit} or more (it accepts {', '.join(map(str, VLLM_RANKS))}; "
            f"default {VLLM_DEFAULT_RANK})")
    if rank > COMMON_MAX_RANK:
        note += (f"; rank {rank} is above {COMMON_MAX_RANK}, what LoRA servers are commonly set up for (every "
                 f"adapter slot is sized for the largest rank): pass --rank {COMMON_MAX_RANK} or lower and check "
                 f"the reported errors, or serve this fine-tune alone as a merged model (--to merged)")
    return note


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def report(built: Built, cfg, adapter: Path, base: Path, diff: float, scale: float) -> dict:
    """export_report.json: what was written, how good it is, and what a server needs."""
    from . import lowrank

    errors = {n: le.error for n, le in built.layers.items()}
    worst = max(errors, key=errors.get)
    return {
        "adapter": str(adapter), "base": str(base), "variant": cfg.variant, "bone_r": cfg.r,
        "rank": built.rank, "exact": built.exact, "rank_rule": built.rule, "dtype": _dtype_name(built.dtype),
        "svd": None if built.exact else f"torch.linalg.svd in {_dtype_name(lowrank.SVD_DTYPE)}, errors in float64",
        "layers": {n: {"out": le.shape[0], "in": le.shape[1], "rank": le.rank, "relative_error": le.error}
                   for n, le in built.layers.items()},
        "relative_error": {"max": errors[worst], "median": statistics.median(errors.values()), "worst": worst},
        "probe": {"max_abs_logit_difference": diff, "logit_scale": scale, "relative": diff / scale,
                  "bone_vs_base": built.update, "batch": list(PROBE_SHAPE), "dtype": "float32"},
        "serving": {"vllm_max_lora_rank": next((v for v in VLLM_RANKS if v >= built.rank), None),
                    "note": serving_note(built.rank)},
    }


def report_lines(rep: dict) -> list[str]:
    """The printed summary of a report: rank, errors per projection, probe check, serving."""
    err = rep["relative_error"]
    lines = [f"LoRA rank {rep['rank']}: {rep['rank_rule']}",
             f"per-layer relative Frobenius error |dW - B A| / |dW| ({len(rep['layers'])} layers, {rep['dtype']}): "
             f"max {err['max']:.2e} ({err['worst']}), median {err['median']:.2e}"]
    groups: dict[str, list[float]] = {}
    for name, layer in rep["layers"].items():
        groups.setdefault(name.rsplit(".", 1)[-1], []).append(layer["relative_error"])
    lines += [f"  {g:<14} {len(e):>4} layer(s)  max {max(e):.2e}  median {statistics.median(e):.2e}"
              for g, e in sorted(groups.items())]
    p = rep["probe"]
    lines.append(f"probe check: max |logit difference| LoRA (PEFT) vs Bone = {p['max_abs_logit_difference']:.3e} "
                 f"(logit scale {p['logit_scale']:.3g}, relative {p['relative']:.1e}; the fine-tune itself moves "
                 f"them by {p['bone_vs_base']:.3g}: Bone vs base; batch {p['batch'][0]}x{p['batch'][1]}, float32)")
    lines.append(f"serving: {rep['serving']['note']}")
    return lines


class LoraTarget(ExportTarget):
    name = "lora"
    about = ("a PEFT LoRA folder for LoRA servers (vLLM, TGI, LoRAX) and PEFT: exact for shard/mini, "
             "a truncated SVD with measured errors for col/row (needs --base)")
    needs_base = False

    def add_arguments(self, parser):
        for f in fields(LoraOptions):
            parser.add_argument("--" + f.name.replace("_", "-"), default=f.default, **f.metadata)

    def check(self, cfg):
        if cfg.train_parts:
            return (f"the adapter also trains base parameters in full (train_parts={cfg.train_parts!r}), which a LoRA "
                    f"folder cannot carry to a LoRA server: export it with --to merged instead")
        return None

    def export(self, adapter, out, *, base, options, overwrite, log):
        import torch

        from ..io import read_adapter

        opts = LoraOptions.from_namespace(options)
        adapter, out = Path(adapter), Path(out)
        if not adapter.is_dir():
            raise MissingPathError(f"--adapter {adapter} is not a folder (pass the adapter/ folder that bone train wrote)")
        cfg, blocks, _ = read_adapter(adapter)
        why = self.check(cfg)
        if why is not None:
            raise ConfigError(f"cannot export {adapter} as LoRA: {why}")
        base = _choose_base(cfg, adapter, None if base is None else Path(base), log)
        check_paths([base, adapter], out, overwrite)
        if out.exists() and not out.is_dir():
            raise OutputExistsError(f"--out {out} is a file, but a LoRA export is a folder: --overwrite only replaces "
                                    f"a folder; choose another --out")
        peft = require("peft", "pip install 'peft>=0.17'",
                       "checking a LoRA export (the written folder is loaded back with PeftModel.from_pretrained)")
        dtype = getattr(torch, opts.dtype) if opts.dtype else next(iter(blocks.values())).dtype
        built = build(cfg, adapter, base, opts, dtype)
        tmp = make_temp_dir(out)
        try:
            write(built, tmp)
            rep = report(built, cfg, adapter, base, *probe_check(built, tmp, base, peft))
            write_json(tmp / REPORT_FILE, rep)
            replace_dir(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        for line in report_lines(rep):
            log(line)
        log(f"wrote {out} (adapter_model.safetensors, adapter_config.json, {REPORT_FILE})")
        return out
