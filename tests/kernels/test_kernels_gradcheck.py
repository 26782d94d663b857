"""gradcheck (float64) of every fused variant, including ragged shard/mini shapes and dropout."""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from bone import variants

# (variant, out, in, r, mini_r, chunk_size): chunk sizes that split out unevenly on purpose
CASES = [
    ("col", 12, 8, 4, None, 8),
    ("col", 12, 8, 4, None, 100),
    ("row", 12, 8, 4, None, 5),
    ("row", 8, 12, 4, None, 4096),
    ("shard", 6, 10, 4, None, 4096),
    ("shard", 6, 8, 4, None, 4096),
    ("mini", 6, 11, 4, 3, 4096),
    ("mini", 6, 8, 8, 2, 4096),
]


@pytest.mark.parametrize("variant,out,in_,r,mini_r,chunk", CASES)
@pytest.mark.parametrize("transposed", [False, True])
def test_gradcheck(case, variant, out, in_, r, mini_r, chunk, transposed):
    x, w, b, blk = case(variant, out, in_, r, mini_r=mini_r, transposed=transposed)
    fn = variants.get(variant).fused(chunk)
    assert gradcheck(lambda x, blk: fn(x, w, b, blk, None), (x, blk))


@pytest.mark.parametrize("variant,out,in_,r,mini_r,chunk", [c for c in CASES if c[0] != "row"])
def test_gradcheck_keep_merged(case, variant, out, in_, r, mini_r, chunk):
    """keep_merged=True: backward reads the merged weight saved in forward (test_kernels_saved shows it is)."""
    x, w, b, blk = case(variant, out, in_, r, mini_r=mini_r, transposed=True)
    fn = variants.get(variant).fused(chunk, keep_merged=True)
    assert gradcheck(lambda x, blk: fn(x, w, b, blk, None), (x, blk))


@pytest.mark.parametrize("variant,mini_r", [("shard", None), ("mini", 2)])
def test_gradcheck_with_dropout(case, variant, mini_r):
    """The mask is redrawn from the saved RNG state in backward; reseeding before each call
    makes the function deterministic for the finite differences."""
    x, w, b, blk = case(variant, 6, 10, 4, mini_r=mini_r)
    fn = variants.get(variant).fused(4096)
    drop = torch.nn.Dropout(0.4)

    def f(x, blk):
        torch.manual_seed(123)
        return fn(x, w, b, blk, drop)

    assert gradcheck(f, (x, blk))
