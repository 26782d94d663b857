"""What the fused functions keep for backward, read with saved_tensors_hooks (a property, not a timing)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import bone
from bone import variants
from bone.bench.measure import SavedLog


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


@pytest.mark.parametrize("variant,mini_r,p", [("shard", None, 0.0), ("shard", None, 0.3), ("mini", 4, 0.3)])
def test_shard_keeps_only_slice_sums(case, variant, mini_r, p):
    out, in_, r = 24, 30, 8  # ragged: 30 % 8 != 0
    x, w, b, blk = case(variant, out, in_, r, mini_r=mini_r, lead=(4, 5), dtype=torch.float32)
    w_ptr = w.untyped_storage().data_ptr()
    drop = nn.Dropout(p) if p else None
    log, _ = _saved(variants.get(variant).fused(4096), x, w, b, blk, drop)
    tokens = x.numel() // in_
    assert log.bytes({w_ptr, blk.untyped_storage().data_ptr()}) == tokens * r * 4  # s only
    ref_log, _ = _saved(variants.get(variant).forward, x, w, b, blk, drop)
    ref_bytes = ref_log.bytes({w_ptr, blk.untyped_storage().data_ptr()})
    assert ref_bytes > tokens * r * 4 if p else ref_bytes == tokens * r * 4  # the reference keeps the mask


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
