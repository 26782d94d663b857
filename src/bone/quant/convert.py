"""Quantizing and dequantizing the layers of a model (bitsandbytes), in place.

  quantized_layers(model)        (name, module) of every quantized layer: bitsandbytes layers and
                                 BoneLinears with a quantized base
  full_precision_modules(model, cfg)   the linear layers a quantized load keeps in full precision:
                                 output heads, and (4-bit) layers whose in_features the blocksize
                                 does not divide (bitsandbytes' CPU kernels read those wrongly)
  quantize_linears(model, names, cfg)  nn.Linear -> Linear4bit / Linear8bitLt (RWKV checkpoints;
                                 Hugging Face folders quantize through transformers instead)
  dequantize(model, dtype)       every quantized layer back to a plain weight holding its
                                 dequantized values (adapters are kept): the model the adapters
                                 were trained against, in full precision, which `bone.merge` accepts
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ..bases import kind_of, prepare
from ..errors import ModelError
from ..inject import bone_layers, is_head
from .bnb import require
from .config import BLOCKSIZE, QuantConfig


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, module in model.named_modules():
        kind = kind_of(module)
        if getattr(module, "quantized", False) or (kind is not None and kind.quantized):
            out.append((name, module))
    return out


def is_quantized(model: nn.Module) -> bool:
    return bool(quantized_layers(model))


def full_precision_modules(model: nn.Module, cfg: QuantConfig) -> list[str]:
    """Names of the nn.Linear layers a load with `cfg` keeps in full precision (see the module docstring)."""
    keep = []
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:
            continue
        if is_head(model, name, module) or (cfg.bits == 4 and module.in_features % BLOCKSIZE):
            keep.append(name)
    return keep


def warn_kept(kept: list[str], model: nn.Module, cfg: QuantConfig) -> None:
    """One warning naming the layers (other than output heads) a quantized load keeps in full precision."""
    modules = dict(model.named_modules())
    odd = [n for n in kept if not is_head(model, n, modules[n])]
    if odd:
        warnings.warn(f"quantize={cfg.method!r}: kept {len(odd)} layer(s) in full precision because their in_features is "
                      f"not a multiple of the 4-bit blocksize {BLOCKSIZE} (bitsandbytes' CPU kernels read such layers "
                      f"wrongly): {odd[:6]}", stacklevel=3)


def _check_linear(model: nn.Module, names: list[str]) -> None:
    modules = dict(model.named_modules())
    bad = [f"{n} ({type(modules[n]).__name__ if n in modules else 'no such module'})" for n in names
           if type(modules.get(n)) is not nn.Linear or not modules[n].weight.is_floating_point()]
    if bad:
        raise ModelError(f"cannot quantize {len(bad)} layer(s): {bad[:6]}; bone quantizes plain nn.Linear layers "
                         f"with floating-point weights")


def _quantized(lin: nn.Linear, cfg: QuantConfig, bnb) -> nn.Module:
    """A bitsandbytes layer holding `lin`'s weights, quantized on the CPU (the same codes on any machine)."""
    w = lin.weight.detach()
    if cfg.bits == 4:
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta",
                              compute_dtype=cfg.torch_compute_dtype, compress_statistics=cfg.double_quant,
                              quant_type=cfg.method)
        q.weight = bnb.nn.Params4bit(w.cpu(), requires_grad=False, compress_statistics=cfg.double_quant,
                                     quant_type=cfg.method, module=q)
    else:
        q = bnb.nn.Linear8bitLt(lin.in_features, lin.out_features, bias=lin.bias is not None, device="meta",
                                has_fp16_weights=False, threshold=float(cfg.int8_threshold))
        q.weight = bnb.nn.Int8Params(w.cpu(), requires_grad=False, has_fp16_weights=False)
        q.compute_dtype = cfg.torch_compute_dtype  # read by bone.quant.kinds (bitsandbytes has no such field for int8)
    if lin.bias is not None:
        q.bias = nn.Parameter(lin.bias.detach().cpu(), requires_grad=False)
    q.weight = q.weight.to("cpu")  # bitsandbytes quantizes here
    return q.requires_grad_(False)


def quantize_linears(model: nn.Module, names: list[str], cfg: QuantConfig) -> list[str]:
    """Replace the nn.Linear layers `names` by bitsandbytes layers quantized with `cfg`, in place,
    skipping `full_precision_modules`; returns the names quantized. Validates before changing."""
    _check_linear(model, names)
    bnb = require()
    kept = set(full_precision_modules(model, cfg))
    warn_kept(sorted(kept & set(names)), model, cfg)
    done = []
    for name in names:
        if name in kept:
            continue
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, _quantized(getattr(owner, child), cfg, bnb))
        done.append(name)
    prepare(model)
    return done


def _plain(module: nn.Module, dtype: torch.dtype | None) -> nn.Linear:
    """An nn.Linear with the dequantized weight (and the bias) of a bitsandbytes layer."""
    w = kind_of(module).rows_of(module).dense()
    lin = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None, device="meta")
    lin.weight = nn.Parameter(w.to(dtype or w.dtype), requires_grad=False)
    if module.bias is not None:
        lin.bias = nn.Parameter(module.bias.detach().to(dtype or module.bias.dtype), requires_grad=False)
    return lin


def _forget_quantization(model: nn.Module) -> None:
    """Drop transformers' quantization markers so the model saves and loads as a plain one."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"):
        if getattr(model, flag, False):
            setattr(model, flag, False)


@torch.no_grad()
def dequantize(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every quantized layer's weight by its dequantized values (computed in fp32; dtype: the
    stored dtype, None = fp32), in place; adapters stay. Afterwards `bone.merge(model)` merges into exactly the
    weights the adapters were trained against."""
    layers = quantized_layers(model)
    if not layers:
        raise ModelError("the model has no quantized layers to dequantize (bitsandbytes Linear4bit / Linear8bitLt)")
    adapted = dict(bone_layers(model))
    for name, module in layers:
        if name in adapted:
            w = module.frozen().dense()
            module.rebase(nn.Parameter(w.to(dtype or w.dtype), requires_grad=False))
            if module.bias is not None and dtype is not None:
                module.bias = nn.Parameter(module.bias.detach().to(dtype), requires_grad=False)
        else:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, _plain(module, dtype))
    _forget_quantization(model)
    return model
