"""bitsandbytes weights as `bone.kernels.WeightRows`: dequantized one chunk of output rows at a time.

4-bit (`Linear4bit`, nf4 / fp4): the codes are one flat array over the row-major `(out, in)`
weight, two 4-bit codes a byte (high nibble first), and every `blocksize` consecutive weights
share one scale (absmax). With double quantization the scales are themselves 8-bit codes in
blocks of 256 with an fp32 scale each plus one offset. Rows o0..o1 are the flat range
[o0 * in, o1 * in): `rows` dequantizes exactly the scale blocks that cover it (any `in`, also one
that the blocksize does not divide) with bitsandbytes' own 1-D dequantize op, then cuts the rows.

8-bit (`Linear8bitLt`, LLM.int8): CB int8 `(out, in)` with one fp32 scale per row (SCB):
W = CB * (SCB / 127), computed as bitsandbytes' own training path does.

The base product `linear` is the layer's own: `bitsandbytes.matmul_4bit` and `bitsandbytes.matmul`
(LLM.int8, with the layer's outlier threshold and train/eval mode). bitsandbytes 0.50's CPU
4-bit dequantize is wrong when the blocksize does not divide `in` (it restarts the scale blocks
at every row); for those layers `linear` multiplies by `rows` chunks instead (`exact_matmul`).
Rows are dequantized in fp32 and cast once, so a chunk equals the fp32 dequantized weight's rows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels.weights import WeightRows
from . import bnb as _bnb

NESTED_BLOCK = 256  # bitsandbytes' block of the double-quantized scales


def exact_matmul(shape: tuple[int, int], blocksize: int) -> bool:
    """Whether bitsandbytes' own 4-bit matmul reads this weight right (its blocks do not straddle rows)."""
    return shape[1] % blocksize == 0


class Bnb4bitRows(WeightRows):
    """A `Params4bit` weight in bitsandbytes' standard layout (see `bone.quant.packing`)."""

    def __init__(self, weight: Tensor, compute_dtype: torch.dtype, chunk: int = 4096):
        qs = weight.quant_state
        self.weight, self.qs = weight, qs
        self.requires_grad = weight.requires_grad
        self.shape = tuple(int(n) for n in qs.shape)
        self.dtype = compute_dtype
        self.codes = weight.data.view(torch.uint8).reshape(-1)  # a view of the packed codes
        self.chunk = chunk  # output rows per chunk when `linear` cannot use bitsandbytes' matmul

    def _scales(self, b0: int, b1: int) -> Tensor:
        """fp32 scales of 4-bit blocks b0..b1 (dequantizing only the covering 256-blocks when nested)."""
        qs = self.qs
        if not qs.nested:
            return qs.absmax[b0:b1].float()
        s0, s1 = b0 // NESTED_BLOCK, -(-b1 // NESTED_BLOCK)
        sub = qs.absmax[s0 * NESTED_BLOCK:s1 * NESTED_BLOCK]
        scales = torch.ops.bitsandbytes.dequantize_blockwise(sub, qs.state2.absmax[s0:s1], qs.state2.code,
                                                             NESTED_BLOCK, torch.float32)
        return (scales + qs.offset)[b0 - s0 * NESTED_BLOCK:b1 - s0 * NESTED_BLOCK]

    def rows(self, o0, o1, dtype):
        out, in_ = self.shape
        o1 = min(o1, out)
        bs = self.qs.blocksize
        e0, e1 = o0 * in_, o1 * in_
        b0, b1 = e0 // bs, -(-e1 // bs)
        end = min(b1 * bs, out * in_)
        codes = self.codes[b0 * bs // 2:(end + 1) // 2]
        n = end - b0 * bs
        # as (blocks, blocksize): bitsandbytes' CPU kernel splits its work over the rows of `shape`
        # (a 1-D shape runs on one thread) and starts a scale block at every row, which is exact here
        shape = [n // bs, bs] if n % bs == 0 else [n]
        vals = torch.ops.bitsandbytes.dequantize_4bit(codes, self._scales(b0, b1), bs, self.qs.quant_type,
                                                      shape, torch.float32)
        return vals.reshape(-1)[e0 - b0 * bs:e1 - b0 * bs].view(o1 - o0, in_).to(dtype)

    def linear(self, x, bias):
        x = x.to(self.dtype)
        bias = None if bias is None else bias.to(self.dtype)
        if exact_matmul(self.shape, self.qs.blocksize):
            return _bnb.require().matmul_4bit(x, self.weight, self.qs, bias=bias)
        y = torch.cat([F.linear(x, self.rows(o0, o0 + self.chunk, self.dtype)) for o0 in range(0, self.shape[0], self.chunk)], -1)
        return y if bias is None else y.add_(bias)


class Bnb8bitRows(WeightRows):
    """An `Int8Params` weight: CB `(out, in)` int8 and SCB `(out,)` row scales."""

    def __init__(self, weight: Tensor, scb: Tensor, compute_dtype: torch.dtype, threshold: float, training: bool):
        self.weight, self.scb = weight, scb
        self.requires_grad = weight.requires_grad
        self.shape = tuple(weight.shape)
        self.dtype = compute_dtype
        self.threshold, self.training = threshold, training

    def rows(self, o0, o1, dtype):
        cb = self.weight.data[o0:o1].to(torch.float32)
        return cb.mul_(self.scb[o0:o1].float().unsqueeze(1).mul(1.0 / 127.0)).to(dtype)

    def linear(self, x, bias):
        bnb = _bnb.require()
        state = bnb.MatmulLtState()
        state.CB, state.SCB = self.weight.data, self.scb
        state.threshold, state.has_fp16_weights, state.is_training = self.threshold, False, self.training
        x = x.to(self.dtype)
        return bnb.matmul(x, self.weight.data, bias=None if bias is None else bias.to(self.dtype), state=state)
