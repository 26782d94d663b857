"""What the fused functions keep for backward, read with saved_tensors_hooks (a property, not a timing)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import bone
from bone import variants
from bone.bench.measure import SavedLog
from bone.kernels import ShardFn
from bone.kernels.shard import dropout_p


def _saved(fn, x, w, b, blk, drop=None):
    with SavedLog() as log:
        y = fn(x, w, b, blk, drop)
    return log, y


@pytest.mark.parametrize("variant", ["col", "row"])
@pytest.mark.parametrize("transposed", [False, True])
def test_col_row_keep_no_weight_sized_tensor(case, variant, transposed):
    out, in_, r = 64, 48, 8
    x, w, b, blk = case(variant, out, in_, r, lead=(2, 3), dtype=torch.float32, transposed=transposed)
    w_ptr = w.untyped_storage().data_ptr()
    log, y = _saved(variants.get(variant).fused(16), x, w, b, blk)
    big = [(shape, ptr) for shape, ptr in log.shapes if torch.Size(shape).numel() >= out * in_ and ptr != w_ptr]
    assert big == []
    assert log.bytes({w_ptr}) <= x.numel() * 4 + blk.numel() * 4  # x and the block, nothing else
    ref_log, _ = _saved(variants.get(variant).forward, x, w, b, blk)
    assert any(torch.Size(s).numel() >= out * in_ and p != w_ptr for s, p in ref_log.shapes)  # the check bites


@pytest.mark.parametrize("variant,mini_r,p", [("shard", None, 0.0), ("shard", None, 0.3), ("mini", 4, 0.0), ("mini", 4, 0.3)])
@pytest.mark.parametrize("fold", [True, False])
def test_shard_keeps_only_slice_sums(case, variant, mini_r, p, fold):
    """Folded or not, shard/mini keep s `(T, r)` and nothing else of their own."""
    out, in_, r = 24, 30, 8  # ragged: 30 % 8 != 0
    x, w, b, blk = case(variant, out, in_, r, mini_r=mini_r, lead=(4, 5), dtype=torch.float32)
    w_ptr = w.untyped_storage().data_ptr()
    drop = nn.Dropout(p) if p else None
    fn = lambda x, w, b, blk, drop: ShardFn.apply(x, w, b, blk, dropout_p(drop), 4096, False, fold)  # noqa: E731
    log, _ = _saved(fn, x, w, b, blk, drop)
    tokens = x.numel() // in_
    assert log.bytes({w_ptr, blk.untyped_storage().data_ptr()}) == tokens * r * 4  # s only
    ref_log, _ = _saved(variants.get(variant).forward, x, w, b, blk, drop)
    ref_bytes = ref_log.bytes({w_ptr, blk.untyped_storage().data_ptr()})
    if p:
        assert ref_bytes > tokens * r * 4  # the reference keeps the mask: the check bites


@pytest.mark.parametrize("variant,mini_r", [("col", None), ("shard", None), ("mini", 4)])
@pytest.mark.parametrize("chunk", [16, 4096])
def test_keep_merged_keeps_the_merged_weight_and_nothing_else(case, variant, mini_r, chunk):
    """keep_merged=True saves what the default saves plus exactly W' (col) / W + dW (shard, mini): one
    `(out, in)` tensor in chunk-row pieces; keep_merged=False saves nothing weight-sized."""
    out, in_, r = 64, 48, 8
    x, w, b, blk = case(variant, out, in_, r, mini_r=mini_r, lead=(2, 3), dtype=torch.float32, transposed=True)
    v = variants.get(variant)
    skip = {w.untyped_storage().data_ptr(), blk.untyped_storage().data_ptr()}
    default, _ = _saved(v.fused(chunk), x, w, b, blk)
    kept, y = _saved(v.fused(chunk, keep_merged=True), x, w, b, blk)
    assert [s for s, p in default.shapes if torch.Size(s).numel() >= out * in_ and p not in skip] == []
    assert kept.bytes(skip) - default.bytes(skip) == out * in_ * 4
    extra = y.grad_fn.saved_tensors[len(default.shapes) - 1:-1]  # (x or s, block, *W' chunks, W)
    assert len(extra) == -(-out // min(out, chunk)) and all(t.shape[1] == in_ for t in extra)
    torch.testing.assert_close(torch.cat(extra), v.merged(w, blk.detach()))


@pytest.mark.parametrize("variant,mini_r", [("col", None), ("shard", None)])
def test_keep_merged_auto_keeps_small_calls_only(case, variant, mini_r):
    """"auto" keeps W' for calls of at most AUTO_TOKENS_PER_R * r tokens (shard: and at least
    AUTO_SHARD_MIN_TOKENS_PER_R * r); nothing is kept when x needs no gradient (dx is the only reader
    of W') or, for shard, when dropout is active (that path never folds)."""
    from bone.kernels import AUTO_SHARD_MIN_TOKENS_PER_R, AUTO_TOKENS_PER_R

    out, in_, r = 16, 8, 4
    limit = AUTO_TOKENS_PER_R * r
    fn = variants.get(variant).fused(4096, keep_merged="auto")

    def weight_sized(tokens, grad=True, drop=None):
        x, w, b, blk = case(variant, out, in_, r, mini_r=mini_r, lead=(tokens,), dtype=torch.float32)
        log, _ = _saved(fn, x.detach().requires_grad_(grad), w, b, blk, drop)
        return [s for s, p in log.shapes if torch.Size(s).numel() == out * in_ and p != w.untyped_storage().data_ptr()]

    assert weight_sized(limit) == [(out, in_)] and weight_sized(limit + 1) == []
    low = AUTO_SHARD_MIN_TOKENS_PER_R * r if variant == "shard" else 1
    assert weight_sized(low) == [(out, in_)] and (low == 1 or weight_sized(low - 1) == [])
    assert weight_sized(limit, grad=False) == []
    if variant == "shard":
        assert weight_sized(limit, drop=nn.Dropout(0.5)) == []


def test_layer_uses_fused_path_by_default():
    """bone.apply with fused=True (the default) keeps no weight-sized tensor; fused=False does."""
    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))

    x = torch.randn(3, 32, requires_grad=True)
    kept = {}
    for fused in (True, False):
        m = bone.apply(model(), bone.BoneConfig(r=8, variant="col", target_modules=["0", "2"], fused=fused))
        params = {p.untyped_storage().data_ptr() for p in m.parameters()}
        with SavedLog() as log:
            m(x).sum()
        kept[fused] = [s for s, ptr in log.shapes if ptr not in params and torch.Size(s).numel() >= 32 * 64]
    assert kept[True] == [] and kept[False] != []


def _storages(module) -> set[int]:
    """Storages of a bitsandbytes layer's own tensors: its parameters and its quantization state."""
    ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    qs = getattr(module.weight, "quant_state", None)
    if qs is not None:
        ptrs |= {t.untyped_storage().data_ptr() for t in (qs.absmax, qs.code)}
        if qs.nested:
            ptrs |= {t.untyped_storage().data_ptr() for t in (qs.state2.absmax, qs.state2.code, qs.offset)}
    scales = [getattr(module.weight, "SCB", None), getattr(getattr(module, "state", None), "SCB", None)]
    return ptrs | {t.untyped_storage().data_ptr() for t in scales if t is not None}


@pytest.mark.parametrize("spec", ["nf4-dq", "fp4", "int8"])
@pytest.mark.parametrize("variant,mini_r", [("col", None), ("row", None), ("shard", None), ("mini", 8)])
def test_quantized_base_keeps_nothing_weight_sized(spec, variant, mini_r):
    """On a bitsandbytes base the kernels save x and the block (col/row) or s (shard/mini) and keep a
    WeightRows on ctx that refers only to the layer's own codes and scales; the reference keeps the
    dequantized weight."""
    from bnb_layers import quantized

    from bone.kernels.weights import WeightRows
    from bone.layer import BoneLinear

    out, in_, r = 128, 192, 16
    q = quantized(spec, out, in_)
    w = BoneLinear(q).train().frozen()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, in_, generator=g, requires_grad=True)
    blk = torch.zeros(variants.get(variant).block_shape(out, in_, r, mini_r), requires_grad=True)
    log, y = _saved(variants.get(variant).fused(32), x, w, q.bias.detach(), blk)
    mine = _storages(q)
    want = x.numel() * 4 + blk.numel() * 4 if variant in ("col", "row") else x.numel() // in_ * r * 4
    exclude = {blk.untyped_storage().data_ptr()} if variant not in ("col", "row") else set()
    assert log.bytes(mine | exclude) == want
    kept = y.grad_fn.frozen  # the ctx of the autograd Function
    assert isinstance(kept, WeightRows)
    held = [t for t in vars(kept).values() if isinstance(t, torch.Tensor)]
    assert held and {t.untyped_storage().data_ptr() for t in held} <= mine
    ref_log, _ = _saved(variants.get(variant).forward, x, w, q.bias.detach(), blk)
    assert any(torch.Size(s).numel() >= out * in_ and p not in mine for s, p in ref_log.shapes)  # the check bites
