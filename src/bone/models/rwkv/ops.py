"""WKV recurrences of RWKV-7 and RWKV-6: a plain per-token form (the reference) and a chunked form.

Shapes: every per-token tensor is `(B, T, H, N)` (N = head size); the state is `(B, H, N, N)`
indexed `[key, value]`, kept in fp32 (fp64 stays fp64). `lw` is the log of the per-channel decay
(<= 0), which is what the models compute directly, so a decay that underflows to 0 is never logged.

RWKV-7 ("x070", a diagonal-plus-low-rank delta rule), per head:
    S_t = (diag(exp(lw_t)) + b_t a_t^T) S_{t-1} + k_t v_t^T,      y_t = S_t^T r_t
RWKV-6 ("x060"), per head, with a per-channel bonus u for the current token:
    y_t = S_{t-1}^T r_t + (r_t . (u * k_t)) v_t,                  S_t = diag(exp(lw_t)) S_{t-1} + k_t v_t^T

The chunked form splits T into chunks of L tokens. Inside a chunk the pairwise decays
exp(G_t - G_s) (G = cumulative lw) come from one matmul of exp(G_t - c) and exp(c - G_s) with c
the chunk's mid-range; L is shrunk (per call) until every factor is finite and normal, which
RWKV-7's bounded decay always allows at L = 64. Chunks are chained by one small matmul each.
On CUDA, when flash-linear-attention (`fla` >= 0.2) is importable, its Triton kernels are used.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _load_fla():
    """fla's RWKV-6 and DPLR (RWKV-7) chunk kernels, or (None, None) when fla is absent, unusable,
    or older than 0.2 (before 0.2 its default layout was head-first, (B, H, T, K))."""
    try:
        from importlib.metadata import version

        major, minor = (int(x) for x in version("flash-linear-attention").split(".")[:2])
        if (major, minor) < (0, 2):
            return None, None
        from fla.ops.generalized_delta_rule import chunk_dplr_delta_rule
        from fla.ops.rwkv6 import chunk_rwkv6
    except Exception:  # noqa: BLE001 - missing package, no triton, odd version string: not available
        return None, None
    return chunk_dplr_delta_rule, chunk_rwkv6


_fla_dplr, _fla_rwkv6 = _load_fla()


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def _zero_state(r: Tensor, dtype: torch.dtype) -> Tensor:
    B, _, H, N = r.shape
    return torch.zeros(B, H, N, N, dtype=dtype, device=r.device)


# ----------------------------------------------------------------------------------------------
# reference: one token at a time


def wkv7_recurrent(r, lw, k, v, a, b, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Plain RWKV-7 recurrence. r, lw, k, v, a, b: (B, T, H, N); state (B, H, N, N) or None.

    Returns y (B, T, H, N) in r's dtype and the final state (fp32 or fp64)."""
    dt = _compute_dtype(r)
    s = _zero_state(r, dt) if state is None else state.to(dt)
    r, lw, k, v, a, b = (t.to(dt) for t in (r, lw, k, v, a, b))
    ys = []
    for t in range(r.shape[1]):
        sa = torch.einsum("bhk,bhkv->bhv", a[:, t], s)  # a_t^T S_{t-1}
        s = s * lw[:, t].exp().unsqueeze(-1) + b[:, t].unsqueeze(-1) * sa.unsqueeze(-2)
        s = s + k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
        ys.append(torch.einsum("bhk,bhkv->bhv", r[:, t], s))
    return torch.stack(ys, 1).to(r.dtype), s


def wkv6_recurrent(r, lw, k, v, u, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Plain RWKV-6 recurrence. r, lw, k, v: (B, T, H, N); u: (H, N); state (B, H, N, N) or None."""
    dt = _compute_dtype(r)
    s = _zero_state(r, dt) if state is None else state.to(dt)
    r, lw, k, v, u = (t.to(dt) for t in (r, lw, k, v, u))
    ys = []
    for t in range(r.shape[1]):
        kv = k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
        ys.append(torch.einsum("bhk,bhkv->bhv", r[:, t], s + u.unsqueeze(-1) * kv))
        s = s * lw[:, t].exp().unsqueeze(-1) + kv
    return torch.stack(ys, 1).to(r.dtype), s


# ----------------------------------------------------------------------------------------------
# chunked (parallel within a chunk, one matmul between chunks)


def _to_chunks(x: Tensor, L: int) -> Tensor:
    """(B, T, H, N) -> (B, H, C, L, N), zero-padded at the end to C*L tokens."""
    B, T, H, N = x.shape
    pad = (-T) % L
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad))
    return x.view(B, (T + pad) // L, L, H, N).permute(0, 3, 1, 2, 4).contiguous()


def _from_chunks(y: Tensor, T: int) -> Tensor:
    """(B, H, C, L, N) -> (B, T, H, N)."""
    B, H, C, L, N = y.shape
    return y.permute(0, 2, 3, 1, 4).reshape(B, C * L, H, N)[:, :T]


def _span_limit(dtype: torch.dtype) -> float:
    """Largest decay span (-sum of lw over a chunk) whose half still has a finite, normal exp."""
    return 120.0 if dtype == torch.float32 else 1200.0


def _chunk_len(lw: Tensor, chunk_size: int) -> int:
    """The largest power-of-two chunk length <= chunk_size whose every chunk spans at most the
    limit (RWKV-7 decays are bounded, so this is chunk_size there; strong RWKV-6 decays shrink it)."""
    T = lw.shape[1]
    L = 1 << max(0, min(chunk_size, T).bit_length() - 1)
    limit = _span_limit(lw.dtype)
    lw = lw.detach()
    if float((-lw).amax()) * L <= limit:  # cheap sufficient test; always true for RWKV-7 at L <= 128
        return L
    total = torch.nn.functional.pad((-lw).cumsum(1), (0, 0, 0, 0, 1, 0))  # (B, T+1, H, N)
    while L > 1:
        ends = torch.arange(0, T + L, L, device=lw.device).clamp(max=T)
        if (total[:, ends[1:]] - total[:, ends[:-1]]).max() <= limit:
            break
        L //= 2
    return L


def _tril(A: Tensor, strict: bool) -> Tensor:
    """Keep s < t (strict) or s <= t in each of the side-by-side (L, L) blocks of A (..., L, n*L)."""
    L = A.shape[-2]
    keep = torch.ones(L, L, dtype=torch.bool, device=A.device).tril(-1 if strict else 0).repeat(1, A.shape[-1] // L)
    return torch.where(keep, A, torch.zeros((), dtype=A.dtype, device=A.device))


def _chain(P: Tensor | None, D: Tensor, Q: Tensor, s0: Tensor) -> tuple[Tensor, Tensor]:
    """S_{c+1} = (diag(D_c) + P_c) S_c + Q_c over the chunk axis 2 (P None: no low-rank part).

    Returns the state at each chunk start (B, H, C, N, N) and the final state (B, H, N, N).
    (unbind/stack rather than indexing, so backward does not zero-fill a full tensor per chunk.)"""
    states = [s0]
    Ps = P.unbind(2) if P is not None else [None] * Q.shape[2]
    for p, d, q in zip(Ps, D.unbind(2), Q.unbind(2)):
        s = states[-1]
        states.append(d.unsqueeze(-1) * s + q + (p @ s if p is not None else 0))
    return torch.stack(states[:-1], 2), states[-1]


def _prepare(lw: Tensor, chunk_size: int, tensors) -> tuple[int, Tensor, Tensor, Tensor, list[Tensor]]:
    """Chunk everything: returns L, G (inclusive cumsum of lw), Gx (exclusive), c (the midpoint
    reference G_L / 2, so that every factor exp(+-(G - c)) stays finite), chunked tensors."""
    lw = lw.clamp(min=-_span_limit(lw.dtype))  # exp(-120) is 0 in fp32 already: no visible change
    L = _chunk_len(lw, chunk_size)
    lw = _to_chunks(lw, L)
    G = lw.cumsum(-2)
    return L, G, G - lw, G[..., -1:, :] / 2, [_to_chunks(t, L) for t in tensors]


def wkv7_chunked(r, lw, k, v, a, b, state: Tensor | None = None, chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV, same contract as `wkv7_recurrent`, chunk-parallel.

    In a chunk (G inclusive / Gx exclusive cumulative lw, S0 its initial state), with
    u_t = a_t^T S_{t-1}:  U = M S0 + U0,  M = (I - A_ab)^-1 (a*e^Gx),  U0 = (I - A_ab)^-1 A_ak V,
    Y = (r*e^G + A_rb M) S0 + A_rb U0 + A_rk V,  S_L = (e^{G_L} + B~^T M) S0 + B~^T U0 + K~^T V,
    with A_xy[t, s] = sum_i x_t,i y_s,i e^{G(x)_t,i - G_s,i} (s < t for a, s <= t for r) and
    B~ = b*e^{G_L-G}, K~ = k*e^{G_L-G}."""
    dt, T, out_dt = _compute_dtype(r), r.shape[1], r.dtype
    s0 = _zero_state(r, dt) if state is None else state.to(dt)
    L, G, Gx, c, (r, k, v, a, b) = _prepare(lw.to(dt), chunk_size, [t.to(dt) for t in (r, k, v, a, b)])
    inv = torch.exp(c - G)
    A = torch.cat([a * (Gx - c).exp(), r * (G - c).exp()], -2) @ torch.cat([b * inv, k * inv], -2).transpose(-1, -2)
    top, bottom = A.split(L, -2)  # rows of a, rows of r; columns [b | k]
    A_ab, A_ak = _tril(top, True).split(L, -1)
    bottom = _tril(bottom, False)  # [A_rb | A_rk]
    N = r.shape[-1]
    eye = torch.eye(L, dtype=dt, device=r.device)
    rhs = torch.cat([a * Gx.exp(), A_ak @ v], -1)
    M, U0 = torch.linalg.solve_triangular(eye - A_ab, rhs, upper=False, unitriangular=True).split(N, -1)
    UV = torch.cat([U0, v], -2)
    to_end = (G[..., -1:, :] - G).exp()
    b_end = (b * to_end).transpose(-1, -2)
    P = b_end @ M  # the chunk's state map is diag(e^{G_L}) + P
    Q = torch.cat([b_end, (k * to_end).transpose(-1, -2)], -1) @ UV
    starts, last = _chain(P, G[..., -1, :].exp(), Q, s0)
    y = (r * G.exp() + bottom[..., :L] @ M) @ starts + bottom @ UV
    return _from_chunks(y, T).to(out_dt), last


def wkv6_chunked(r, lw, k, v, u, state: Tensor | None = None, chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """RWKV-6 WKV, same contract as `wkv6_recurrent`, chunk-parallel.

    In a chunk: Y = (r*e^Gx) S0 + A_rk V + diag(r . (u*k)) V with A_rk[t, s] (s < t) =
    sum_i r_t,i k_s,i e^{Gx_t,i - G_s,i};  S_L = e^{G_L} S0 + (k*e^{G_L-G})^T V."""
    dt, T, out_dt = _compute_dtype(r), r.shape[1], r.dtype
    s0 = _zero_state(r, dt) if state is None else state.to(dt)
    L, G, Gx, c, (r, k, v) = _prepare(lw.to(dt), chunk_size, [t.to(dt) for t in (r, k, v)])
    A = _tril((r * (Gx - c).exp()) @ (k * (c - G).exp()).transpose(-1, -2), True)
    Q = (k * (G[..., -1:, :] - G).exp()).transpose(-1, -2) @ v
    starts, last = _chain(None, G[..., -1, :].exp(), Q, s0)
    bonus = (r * k * u.to(dt)[None, :, None, None, :]).sum(-1, keepdim=True) * v
    y = (r * Gx.exp()) @ starts + A @ v + bonus
    return _from_chunks(y, T).to(out_dt), last


# ----------------------------------------------------------------------------------------------
# dispatch


def _use_fla(x: Tensor, kernel) -> bool:
    return kernel is not None and x.is_cuda


def wkv7(r, lw, k, v, a, b, state: Tensor | None = None, chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV for the model: fla's DPLR kernel on CUDA when installed, else `wkv7_chunked`."""
    if _use_fla(r, _fla_dplr):
        s0 = None if state is None else state.float()
        y, s = _fla_dplr(q=r, k=k, v=v, a=a, b=b, gk=lw.float(), scale=1.0, initial_state=s0, output_final_state=True)
        return y.to(r.dtype), s
    return wkv7_chunked(r, lw, k, v, a, b, state, chunk_size)


def wkv6(r, lw, k, v, u, state: Tensor | None = None, chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """RWKV-6 WKV for the model: fla's chunk_rwkv6 on CUDA when installed, else `wkv6_chunked`."""
    if _use_fla(r, _fla_rwkv6):
        s0 = None if state is None else state.float()
        y, s = _fla_rwkv6(r, k, v, lw.float(), u, scale=1.0, initial_state=s0, output_final_state=True)
        return y.to(r.dtype), s
    return wkv6_chunked(r, lw, k, v, u, state, chunk_size)
