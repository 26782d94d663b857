"""bitsandbytes layers for the quantized-base tests: built from a seeded nn.Linear, quantized on the CPU,
and their dequantized weights computed independently of bone (bitsandbytes' own dequantize where it is
right, the 4-bit format read in plain torch where it is not).

tests/conftest.py puts this folder on sys.path, so any test can `import bnb_layers`."""
from __future__ import annotations

import pytest
import torch
from torch import nn

# name -> (kind, quant_type, double quantization)
SPECS = {"nf4": ("4bit", "nf4", False), "fp4": ("4bit", "fp4", False), "nf4-dq": ("4bit", "nf4", True),
         "fp4-dq": ("4bit", "fp4", True), "int8": ("8bit", None, False)}


def bnb():
    return pytest.importorskip("bitsandbytes")


def plain(out: int, in_: int, bias: bool = True, seed: int = 0, scale: float = 0.1) -> nn.Linear:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(in_, out, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out, in_, generator=g) * scale)
        if bias:
            lin.bias.copy_(torch.randn(out, generator=g) * scale)
    return lin


def quantized(spec: str, out: int, in_: int, bias: bool = True, seed: int = 0, compute_dtype=torch.float32) -> nn.Module:
    """A bitsandbytes layer of `spec` (see SPECS) holding a seeded random weight, quantized on the CPU."""
    b = bnb()
    kind, qtype, double = SPECS[spec]
    lin = plain(out, in_, bias, seed)
    if kind == "4bit":
        q = b.nn.Linear4bit(in_, out, bias=bias, compute_dtype=compute_dtype, compress_statistics=double, quant_type=qtype)
    else:
        q = b.nn.Linear8bitLt(in_, out, bias=bias, has_fp16_weights=False, threshold=0.0)
    q.load_state_dict(lin.state_dict())
    return q.to("cpu")


def format_dequant_4bit(weight) -> torch.Tensor:
    """The fp32 weight a 4-bit Params4bit encodes, read from the format in plain torch: flat codes over
    the row-major weight (high nibble first), one scale per `blocksize` consecutive weights."""
    b = bnb()
    qs = weight.quant_state
    out, in_ = qs.shape
    flat = weight.data.view(torch.uint8).reshape(-1)
    codes = torch.stack([flat >> 4, flat & 0xF], 1).reshape(-1)[:out * in_].long()
    scales = qs.absmax.float() if not qs.nested else (b.functional.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset).float()
    return (qs.code.float()[codes] * scales.repeat_interleave(qs.blocksize)[:out * in_]).view(out, in_)


def dequantized(module) -> torch.Tensor:
    """The fp32 `(out, in)` weight of a bitsandbytes layer, computed without bone."""
    b = bnb()
    if isinstance(module, b.nn.Linear4bit):
        return format_dequant_4bit(module.weight)
    scb = module.weight.SCB if module.weight.SCB is not None else module.state.SCB
    return module.weight.data.float() * scb.float().unsqueeze(1).mul(1.0 / 127.0)
