"""Low-rank factors of a weight update: truncated SVD, the rank rule, the measured error.

A col/row update dW = W' - W `(out, in)` depends on W and is in general full-rank. Its best rank-k
approximation in the Frobenius norm is the truncated SVD (Eckart-Young), with relative error

    e(k) = sqrt(sum_{i>k} s_i^2) / sqrt(sum_i s_i^2)          (s: the singular values of dW)

The SVD runs in float32 (`torch.linalg.svd` / `svdvals`, LAPACK's divide and conquer, every
singular value): its error (~1e-6 of |dW|) is far below any error a rank choice trades (1e-2 and
up), and U, S, V take half the memory of float64. dW itself is formed in float64 (no cancellation of W' - W) and
the error of the factors actually written is measured against it in float64 (`relative_error`),
so what the export reports is what a server computes. A randomized SVD (`svd_lowrank`) is not used:
the default rank needs the whole spectrum of every layer (the tail energy at every k), and a
trained col/row spectrum is flat, so the top singular vectors alone do not bound the error. The
cost is two SVDs per layer (`svdvals` for the rank, `svd` for the factors), O(out * in * min(out, in)).
"""
from __future__ import annotations

import torch
from torch import Tensor

SVD_DTYPE = torch.float32


def tail_errors(s: Tensor) -> Tensor:
    """e(k) for k = 0..len(s) from singular values `s` (descending); all zeros when s is."""
    e = s.double().square()
    tail = torch.cat([e.flip(0).cumsum(0).flip(0), e.new_zeros(1)])
    return (tail / tail[0]).sqrt() if tail[0] > 0 else torch.zeros_like(tail)


def rank_needed(dw: Tensor, max_error: float) -> int:
    """The smallest k whose best rank-k approximation of `dw` has relative error <= max_error."""
    errors = tail_errors(torch.linalg.svdvals(dw.to(SVD_DTYPE)))
    return int((errors <= max_error).nonzero()[0].item())


def truncated(dw: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(B `(out, k)`, A `(k, in)`) with B @ A the best rank-k approximation of `dw` (float32).

    The singular values are split evenly (B = U sqrt(S), A = sqrt(S) V^T), so B and A have the
    same scale and survive 16-bit storage equally."""
    u, s, vh = torch.linalg.svd(dw.to(SVD_DTYPE), full_matrices=False)
    root = s[:k].sqrt()
    return u[:, :k] * root, root[:, None] * vh[:k]


def padded(b: Tensor, a: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """B and A with zero columns / rows added up to rank k (B @ A unchanged)."""
    extra = k - b.shape[1]
    return (torch.cat([b, b.new_zeros(b.shape[0], extra)], 1),
            torch.cat([a, a.new_zeros(extra, a.shape[1])], 0))


def relative_error(dw: Tensor, b: Tensor, a: Tensor) -> float:
    """|dW - B A|_F / |dW|_F in float64 (0 when both are zero)."""
    ref = dw.double()
    miss = torch.linalg.matrix_norm(ref - b.double() @ a.double()).item()
    norm = torch.linalg.matrix_norm(ref).item()
    if norm == 0:
        return 0.0 if miss == 0 else float("inf")
    return miss / norm
