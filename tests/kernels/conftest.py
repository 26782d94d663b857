"""Shared builders for the Flash-Bone kernel tests: random layer inputs for every variant."""
from __future__ import annotations

import pytest
import torch

from bone import variants


def build_case(variant: str, out: int, in_: int, r: int, *, mini_r: int | None = None, lead=(2, 3),
               dtype=torch.float64, block_dtype=None, transposed: bool = False, bias: bool = True,
               seed: int = 0, scale: float = 0.2):
    """(x, w, bias, block) for one adapted layer; w is a weight.t() view when `transposed`
    (transformers Conv1D), x and block require grad, w and bias are frozen."""
    gen = torch.Generator().manual_seed(seed)
    shape = variants.get(variant).block_shape(out, in_, r, mini_r)
    x = torch.randn(*lead, in_, generator=gen).to(dtype).requires_grad_()
    w = torch.randn(in_, out, generator=gen).to(dtype).t() if transposed else torch.randn(out, in_, generator=gen).to(dtype)
    b = torch.randn(out, generator=gen).to(dtype) if bias else None
    blk = (scale * torch.randn(*shape, generator=gen)).to(block_dtype or dtype).requires_grad_()
    return x, w, b, blk


@pytest.fixture
def case():
    return build_case
