"""The variant math against a plain einops reference (hypothesis), inverses, and gradcheck."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from hypothesis import given, settings
from hypothesis import strategies as st

from bone import variants

SETTINGS = settings(max_examples=40, deadline=None)


def ref_col(w, b, r):
    """The seed's BoneLinear, verbatim in einops."""
    d = rearrange(w, "(a r1) (b r2) -> b a r1 r2", r1=r, r2=r) @ b + b
    return w + rearrange(d, "b a r1 r2 -> (a r1) (b r2)")


def ref_row(w, d, r):
    x = rearrange(w, "(a r1) (b r2) -> a b r1 r2", r1=r, r2=r) @ d + d
    return w + rearrange(x, "a b r1 r2 -> (a r1) (b r2)")


def ref_shard_delta(m, out, in_):
    r = m.shape[0]
    n = -(-in_ // r)
    return repeat(m, "i o -> o (j i)", j=n)[:, :in_]


def ref_shard_forward(x, w, m):
    r = m.shape[0]
    pad = (-x.shape[-1]) % r
    s = rearrange(F.pad(x, (0, pad)), "... (j i) -> ... j i", i=r).sum(-2)
    return x @ w.t() + s @ m


blocks = st.tuples(st.integers(1, 4), st.integers(1, 4), st.sampled_from([1, 2, 3, 4, 8]), st.integers(0, 2**16))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name,ref,n_blocks", [("col", ref_col, lambda a, b: a), ("row", ref_row, lambda a, b: b)],
                         ids=["col", "row"])
@SETTINGS
@given(shape=blocks)
def test_col_row_match_einops(name, ref, n_blocks, shape):
    """col has one block per output block (a), row one per input block (b)."""
    a, b, r, seed = shape
    g = _gen(seed)
    w = torch.randn(a * r, b * r, generator=g, dtype=torch.float64)
    blk = torch.randn(n_blocks(a, b), r, r, generator=g, dtype=torch.float64) * 0.1
    torch.testing.assert_close(variants.get(name).merged(w, blk), ref(w, blk, r))


@SETTINGS
@given(st.integers(1, 24), st.integers(1, 24), st.integers(1, 8), st.integers(0, 2**16))
def test_shard_merge_and_forward_match_einops_including_ragged(out, in_, r, seed):
    r = min(r, in_)
    g = _gen(seed)
    w = torch.randn(out, in_, generator=g, dtype=torch.float64)
    m = torch.randn(r, out, generator=g, dtype=torch.float64)
    x = torch.randn(3, in_, generator=g, dtype=torch.float64)
    v = variants.get("shard")
    torch.testing.assert_close(v.merged(w, m), w + ref_shard_delta(m, out, in_))
    torch.testing.assert_close(v.forward(x, w, None, m), ref_shard_forward(x, w, m))
    torch.testing.assert_close(v.forward(x, w, None, m), x @ v.merged(w, m).t())


@SETTINGS
@given(st.integers(1, 4), st.sampled_from([1, 2, 4]), st.integers(3, 12), st.integers(1, 6), st.integers(0, 2**16))
def test_mini_is_shard_with_repeated_block(k, mini_r, in_, r, seed):
    r = min(r, in_)
    out = k * mini_r
    g = _gen(seed)
    w = torch.randn(out, in_, generator=g, dtype=torch.float64)
    dm = torch.randn(r, mini_r, generator=g, dtype=torch.float64)
    x = torch.randn(2, 5, in_, generator=g, dtype=torch.float64)
    m = dm.repeat(1, out // mini_r)
    torch.testing.assert_close(variants.get("mini").forward(x, w, None, dm), ref_shard_forward(x, w, m))
    torch.testing.assert_close(variants.get("mini").merged(w, dm), variants.get("shard").merged(w, m))


@SETTINGS
@given(st.integers(1, 24), st.integers(1, 24), st.integers(1, 8), st.sampled_from([None, 1, 2]), st.integers(0, 2**16))
def test_shard_and_mini_lora_factors_are_exact(out, in_, r, mini_r, seed):
    """B @ A equals the merged update bit for bit (one term per entry), at rank r, ragged in % r included."""
    r = min(r, in_)
    name = "shard" if mini_r is None else "mini"
    out = out if mini_r is None else mini_r * out
    g = _gen(seed)
    w = torch.randn(out, in_, generator=g, dtype=torch.float64)
    v = variants.get(name)
    assert v.exact_lora
    blk = torch.randn(v.block_shape(out, in_, r, mini_r), generator=g, dtype=torch.float64)
    b, a = v.lora_factors(blk, out, in_)
    assert b.shape == (out, r) and a.shape == (r, in_)
    assert torch.equal(b @ a, v.delta(blk, out, in_))
    torch.testing.assert_close(w + b @ a, v.merged(w, blk), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["col", "row"])
def test_col_and_row_have_no_exact_lora_factors(name):
    """Their update W B + B depends on W: no factors that hold whatever the base."""
    v = variants.get(name)
    assert not v.exact_lora and v.lora_factors(torch.zeros(2, 4, 4), 8, 8) is None


@SETTINGS
@given(blocks, st.sampled_from(["col", "row", "shard"]))
def test_unmerged_inverts_merged(shape, name):
    a, b, r, seed = shape
    g = _gen(seed)
    w = torch.randn(a * r, b * r, generator=g, dtype=torch.float64)
    v = variants.get(name)
    blk = torch.randn(v.block_shape(a * r, b * r, r, None), generator=g, dtype=torch.float64) * 0.1
    torch.testing.assert_close(v.unmerged(v.merged(w, blk), blk), w)


def test_unmerge_refuses_singular_block():
    r = 4
    blk = torch.zeros(2, r, r)
    blk[1] = -torch.eye(r)  # I + B = 0
    w = torch.randn(8, 8)
    with pytest.raises(ValueError, match=r"singular or ill-conditioned for block\(s\) \[1\]"):
        variants.get("col").unmerged(w, blk)


def test_forward_equals_merged_product():
    g = _gen(3)
    x = torch.randn(2, 3, 8, generator=g, dtype=torch.float64)
    w = torch.randn(12, 8, generator=g, dtype=torch.float64)
    bias = torch.randn(12, generator=g, dtype=torch.float64)
    for name in ("col", "row", "shard", "mini"):
        v = variants.get(name)
        blk = torch.randn(v.block_shape(12, 8, 4, 6), generator=g, dtype=torch.float64)
        torch.testing.assert_close(v.forward(x, w, bias, blk), x @ v.merged(w, blk).t() + bias)


@pytest.mark.parametrize("name,out,in_,r,mini_r", [
    ("col", 8, 12, 4, None), ("row", 12, 8, 4, None), ("shard", 6, 10, 4, None), ("mini", 6, 10, 4, 3),
])
def test_gradcheck_float64(name, out, in_, r, mini_r):
    v = variants.get(name)
    g = _gen(7)
    x = torch.randn(2, in_, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(out, in_, generator=g, dtype=torch.float64)
    blk = (torch.randn(v.block_shape(out, in_, r, mini_r), generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x_, b_: v.forward(x_, w, None, b_), (x, blk))


@pytest.mark.parametrize("name", ["col", "row", "shard", "mini"])
def test_zero_block_has_nonzero_gradient(name):
    v = variants.get(name)
    g = _gen(11)
    x = torch.randn(5, 8, generator=g)
    w = torch.randn(8, 8, generator=g)
    blk = torch.zeros(v.block_shape(8, 8, 4, 2), requires_grad=True)
    v.forward(x, w, None, blk).square().sum().backward()
    assert torch.all(blk.grad.flatten(1).abs().sum(1) > 0)
