"""bone.quant.rows and bone.quant.packing: row chunks of bitsandbytes weights are exact, for any shape and
chunking; a 4-bit weight bitsandbytes repacked for its CPU kernel is put back exactly."""
from __future__ import annotations

import pytest
import torch

from bnb_layers import bnb, dequantized, format_dequant_4bit, quantized
from bone.quant import packing
from bone.quant.kinds import Linear4bitKind, Linear8bitKind


@pytest.mark.parametrize("spec", ["nf4", "fp4", "nf4-dq", "fp4-dq"])
@pytest.mark.parametrize("out,in_", [(128, 384), (96, 352), (40, 30), (33, 7), (520, 64), (300, 1000)])
def test_4bit_row_chunks_are_exact(spec, out, in_):
    q = quantized(spec, out, in_, bias=False)
    rows = Linear4bitKind().rows_of(q)
    want = format_dequant_4bit(q.weight)
    if in_ % 64 == 0:  # where bitsandbytes' own dequantize is right, it agrees with the format read in torch
        assert torch.equal(bnb().functional.dequantize_4bit(q.weight.data, q.weight.quant_state).float(), want)
    for chunk in (1, 8, 17, out):
        got = torch.cat([rows.rows(o0, o0 + chunk, torch.float32) for o0 in range(0, out, chunk)])
        assert torch.equal(got, want), chunk
    assert torch.equal(rows.dense(), want)
    assert rows.rows(0, 5, torch.bfloat16).dtype == torch.bfloat16


def test_int8_rows_are_bitsandbytes_training_dequantization():
    q = quantized("int8", 48, 80)
    rows = Linear8bitKind().rows_of(q.train())
    assert torch.equal(torch.cat([rows.rows(o0, o0 + 7, torch.float32) for o0 in range(0, 48, 7)]), dequantized(q))
    x = torch.randn(3, 80)
    torch.testing.assert_close(rows.linear(x, q.bias), q(x), rtol=0, atol=0)  # training mode: bitsandbytes' fp path


def _repacked(spec):
    """A Linear4bit after an eval forward without grad (bitsandbytes repacks it on AVX512-BF16 CPUs)."""
    q = quantized(spec, 128, 384).eval()
    before = format_dequant_4bit(q.weight)
    with torch.no_grad():
        q(torch.randn(2, 384))
    if not packing.is_repacked(q.weight):
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes does not repack here")
    return q, before


@pytest.mark.parametrize("spec", ["nf4", "nf4-dq", "fp4-dq"])
def test_repacked_weight_is_restored(spec):
    q, before = _repacked(spec)
    wrong = bnb().functional.dequantize_4bit(q.weight.data, q.weight.quant_state).float()
    assert (wrong - before).abs().max() > 0.02  # the trap: bitsandbytes' dequantize now reads garbage
    scales = q.weight.quant_state.absmax.t().reshape(-1).float()  # the bf16 scales the repacked layer computes with
    assert packing.problem(q.weight) is None
    packing.restore(q.weight)
    after = format_dequant_4bit(q.weight)
    assert torch.equal(q.weight.quant_state.absmax, scales)
    # same codes; the scales differ from the original ones only by their bf16 rounding
    assert torch.all((after - before).abs() <= before.abs() * 2.0 ** -8 + 1e-12)
    torch.testing.assert_close(bnb().functional.dequantize_4bit(q.weight.data, q.weight.quant_state).float(), after,
                               rtol=0, atol=0)  # bitsandbytes reads the standard layout again
    x = torch.randn(2, 384, requires_grad=True)
    q.train()(x).sum().backward()  # and its own training path works again
    torch.testing.assert_close(x.grad, after.sum(0).expand(2, -1), rtol=1e-5, atol=1e-5)


def test_repacked_layout_bone_cannot_read_is_named():
    q, _ = _repacked("nf4")
    q.weight.data = q.weight.data.reshape(64, 384)  # some other tool's layout
    why = Linear4bitKind().problem(q)
    assert "repacked by bitsandbytes' CPU inference path" in why and "(64, 384)" in why
