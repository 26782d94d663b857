"""bitsandbytes' CPU inference layout of a 4-bit weight, and the way back to the standard layout.

On CPUs with AVX512-BF16, the first forward of a `Linear4bit` in eval mode without grad
(bitsandbytes 0.50) repacks `weight.data` from the standard flat codes `(out * in / 2, 1)` into
`(out, in / 2)` with rows interleaved in groups of 32, dequantizes double-quantized scales and
stores them transposed in bfloat16 `(in / blocksize, out)`, and flags the state
`packing_format_for_cpu`. From then on bitsandbytes' standard dequantize reads garbage, its own
backward fails, and its inverse leaves single-quantized scales transposed (wrong weights).

bone keeps layers out of that path (`bone.quant.kinds` turns the repacking off for every 4-bit
layer of a model it loads or adapts); a layer that was repacked before bone saw it is put back
into the standard layout here, exactly: the codes are unchanged and the scales are the bfloat16
scales the repacked layer computes with (single-quantized, fp32). `problem` says why a layer
cannot be put back (a layout other than the one described), naming what it found.
"""
from __future__ import annotations

import torch
from torch import Tensor

GROUP = 32  # rows interleaved together by the CPU layout


def is_repacked(weight: Tensor) -> bool:
    return bool(getattr(weight.quant_state, "packing_format_for_cpu", False))


def problem(weight: Tensor) -> str | None:
    """Why a repacked weight cannot be put back into the standard layout, or None."""
    qs = weight.quant_state
    out, in_ = (int(n) for n in qs.shape)
    data, absmax = weight.data, qs.absmax
    want_data, want_scales = (out, in_ // 2), (in_ // qs.blocksize, out)
    if (data.dtype != torch.uint8 or tuple(data.shape) != want_data or out % GROUP or in_ % qs.blocksize
            or tuple(absmax.shape) != want_scales):
        return (f"its 4-bit weight was repacked by bitsandbytes' CPU inference path into a layout bone cannot read "
                f"(codes {data.dtype} {tuple(data.shape)}, scales {tuple(absmax.shape)}; expected uint8 {want_data}, "
                f"scales {want_scales})")
    return None


def restore(weight: Tensor) -> None:
    """Put a repacked 4-bit weight back into the standard layout, in place (see the module docstring)."""
    from .bnb import require

    qs = weight.quant_state
    out, in_ = (int(n) for n in qs.shape)
    # each run of 32 bytes holds, for 32 rows g and one column pair c, the 64 codes (g, j) in order:
    # the low nibbles the first 32, the high nibbles the last 32
    packed = weight.data.reshape(out // GROUP, in_ // 2, GROUP)
    codes = torch.cat([packed & 0xF, packed >> 4], dim=-1).reshape(out // GROUP, in_ // 2, GROUP, 2)
    codes = codes.permute(0, 2, 1, 3).reshape(out * in_)  # row-major (out, in)
    flat = ((codes[0::2] << 4) | codes[1::2]).to(torch.uint8).unsqueeze(1)
    storage = getattr(qs, "original_storage_type", None)
    if storage is not None and storage != torch.uint8:
        flat = flat.view(storage)
    scales = qs.absmax.t().reshape(-1).float().contiguous()
    bnb = require()
    state = bnb.functional.QuantState(absmax=scales, shape=torch.Size((out, in_)), code=qs.code, blocksize=qs.blocksize,
                                      quant_type=qs.quant_type, dtype=getattr(qs, "original_dtype", qs.dtype))
    weight.data = flat
    weight.quant_state = state
    module = getattr(weight, "module", None)
    if module is not None:
        module.quant_state = state
