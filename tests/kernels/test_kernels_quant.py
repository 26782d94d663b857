"""Flash-Bone kernels on bitsandbytes bases: every variant's output and gradients (wrt x and the block)
on a 4-bit (nf4, fp4, with and without double quantization) and an 8-bit layer equal the variant's
reference math on the fp32 dequantized weight, up to fp32 rounding."""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from bnb_layers import SPECS, bnb, dequantized, quantized
from bone import variants
from bone.layer import BoneLinear

MINI_R = {"col": None, "row": None, "shard": None, "mini": 8}


def rows_of(module, training=True):
    """What a BoneLinear around `module` hands the kernels (training mode: bitsandbytes' CPU int8 path is fp)."""
    layer = BoneLinear(module).train(training)
    return layer.frozen()


def grads(fn, x, w, bias, blk):
    x, blk = x.detach().requires_grad_(), blk.detach().requires_grad_()
    y = fn(x, w, bias, blk, None)
    gy = torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(y.dtype)
    return (y, *torch.autograd.grad(y, (x, blk), gy))


def inputs(variant, out, in_, r=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = variants.get(variant).block_shape(out, in_, r, MINI_R[variant])
    return torch.randn(2, 5, in_, generator=g), 0.1 * torch.randn(shape, generator=g)


@pytest.mark.parametrize("spec", sorted(SPECS))
@pytest.mark.parametrize("variant", ["col", "row", "shard", "mini"])
def test_fused_equals_reference_on_dequantized_weight(spec, variant):
    out, in_ = 128, 192
    q = quantized(spec, out, in_)
    w = dequantized(q)
    x, blk = inputs(variant, out, in_)
    bias = q.bias.detach()
    v = variants.get(variant)
    want = grads(v.forward, x, w, bias, blk)
    for fn in (v.fused(32), v.forward):  # chunks of 32 output rows; and the reference path on the WeightRows
        for name, got, ref in zip(("y", "dx", "dblock"), grads(fn, x, rows_of(q), bias, blk), want):
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item(), msg=f"{spec} {variant} {name}")


@pytest.mark.parametrize("variant", ["col", "row", "shard", "mini"])
def test_in_features_the_blocksize_does_not_divide(variant):
    """in=96: 4-bit scale blocks straddle rows. bitsandbytes' own CPU dequantize (and so its matmul) reads
    such a weight wrongly; bone's row chunks and its base product read it right."""
    out, in_ = 64, 96
    q = quantized("nf4-dq", out, in_)
    w = dequantized(q)  # the format read in plain torch
    own = bnb().functional.dequantize_4bit(q.weight.data, q.weight.quant_state).float()
    assert (own - w).abs().max() > 0.05  # the bitsandbytes trap this test guards against
    x, blk = inputs(variant, out, in_)
    v = variants.get(variant)
    for name, got, ref in zip(("y", "dx", "dblock"), grads(v.fused(16), x, rows_of(q), q.bias.detach(), blk),
                              grads(v.forward, x, w, q.bias.detach(), blk)):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item(), msg=f"{variant} {name}")


@pytest.mark.parametrize("spec", ["nf4-dq", "int8"])
@pytest.mark.parametrize("variant", ["col", "row"])
def test_gradcheck_on_quantized_base(spec, variant):
    """col/row read only dequantized rows (exact in float64 too), so gradcheck applies."""
    q = quantized(spec, 32, 64)
    x, blk = inputs(variant, 32, 64, r=16)
    x, blk = x[:, :2].double().requires_grad_(), blk.double().requires_grad_()
    fn, w, bias = variants.get(variant).fused(16), rows_of(q), q.bias.detach().double()
    assert gradcheck(lambda x, blk: fn(x, w, bias, blk, None), (x, blk))


@pytest.mark.parametrize("variant", ["col", "shard"])
def test_bf16_compute_dtype(variant):
    """A bf16 compute dtype: shard's base product runs in bf16 (bitsandbytes' matmul), col in the block's fp32."""
    out, in_ = 64, 128
    q = quantized("nf4", out, in_, compute_dtype=torch.bfloat16)
    w = dequantized(q)
    x, blk = inputs(variant, out, in_)
    v = variants.get(variant)
    got, ref = grads(v.fused(16), x, rows_of(q), q.bias.detach(), blk), grads(v.forward, x, w, q.bias.detach(), blk)
    tol = 1e-5 if variant == "col" else 2e-2
    for name, a, b in zip(("y", "dx", "dblock"), got, ref):
        torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol * b.abs().max().item(), msg=name)


def test_int8_eval_uses_bitsandbytes_int8_product():
    """In eval mode the 8-bit base product is LLM.int8 (activations quantized too), as the layer's own forward."""
    q = quantized("int8", 64, 128).eval()
    x, blk = inputs("shard", 64, 128)
    with torch.no_grad():
        y = variants.get("shard").fused(64)(x, rows_of(q, training=False), q.bias.detach(), torch.zeros_like(blk), None)
        want = q(x)
    torch.testing.assert_close(y.float(), want.float(), rtol=0, atol=0)
