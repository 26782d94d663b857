"""export/lowrank: the rank rule and the truncated factors on matrices with a known spectrum."""
from __future__ import annotations

import torch

from bone.export import lowrank


def with_spectrum(s, out=12, in_=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(out, len(s), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(in_, len(s), generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(s, dtype=torch.float64)) @ v.t()


def test_tail_errors_and_rank_needed_follow_the_spectrum():
    s = [4.0, 2.0, 1.0, 1.0]  # energies 16, 4, 1, 1 of 22
    want = [1.0, (6 / 22) ** 0.5, (2 / 22) ** 0.5, (1 / 22) ** 0.5, 0.0]
    torch.testing.assert_close(lowrank.tail_errors(torch.tensor(s)), torch.tensor(want, dtype=torch.float64))
    dw = with_spectrum(s)
    assert lowrank.rank_needed(dw, 0.6) == 1 and lowrank.rank_needed(dw, 0.5) == 2
    assert lowrank.rank_needed(dw, 0.25) == 3 and lowrank.rank_needed(dw, 0.2) == 4
    assert lowrank.rank_needed(torch.zeros(5, 3), 0.1) == 0


def test_truncated_factors_are_the_best_rank_k_and_balanced():
    dw = with_spectrum([4.0, 2.0, 1.0, 1.0])
    b, a = lowrank.truncated(dw, 2)
    assert b.shape == (12, 2) and a.shape == (2, 9) and b.dtype == torch.float32
    assert abs(lowrank.relative_error(dw, b, a) - (2 / 22) ** 0.5) < 1e-6
    torch.testing.assert_close(b.norm(dim=0), a.norm(dim=1))  # sqrt(S) on both sides


def test_padding_keeps_the_product_and_errors_of_zero_updates():
    dw = with_spectrum([3.0, 1.0])
    b, a = lowrank.truncated(dw, 2)
    pb, pa = lowrank.padded(b, a, 5)
    assert pb.shape == (12, 5) and pa.shape == (5, 9) and not pb[:, 2:].any() and not pa[2:].any()
    torch.testing.assert_close(pb @ pa, b @ a)
    zero = torch.zeros(4, 4)
    assert lowrank.relative_error(zero, torch.zeros(4, 1), torch.zeros(1, 4)) == 0.0
    assert lowrank.relative_error(zero, torch.ones(4, 1), torch.ones(1, 4)) == float("inf")
