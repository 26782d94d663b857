"""WKV recurrences of RWKV-7 and RWKV-6: a plain per-token form (the reference) and a chunked form.

Shapes: every per-token tensor is `(B, T, H, N)` (N = head size); the state is `(B, H, N, N)`
indexed `[key, value]`, kept in fp32 (fp64 stays fp64). `lw` is the log of the per-channel decay
(<= 0), which is what the models compute directly, so a decay that underflows to 0 is never logged.

RWKV-7 ("x070", a diagonal-plus-low-rank delta rule), per head:
    S_t = (diag(exp(lw_t)) + b_t a_t^T) S_{t-1} + k_t v_t^T,      y_t = S_t^T r_t
RWKV-6 ("x060"), per head, with a per-channel bonus u for the current token:
    y_t = S_{t-1}^T r_t + (r_t . (u * k_t)) v_t,                  S_t = diag(exp(lw_t)) S_{t-1} + k_t v_t^T

The chunked form splits T into chunks of L tokens (16 is fastest on CPU). Inside a chunk the
pairwise decays exp(G_t - G_s) (G = cumulative lw) come from one matmul of exp(G_t - c) and
exp(c - G_s) with c the chunk's mid-range; L is shrunk (per call) until every factor is finite and
normal, which RWKV-7's bounded decay always allows at L = 64. All intra-chunk work (for RWKV-7 the
WY-style inverse of the chunk's unit-lower-triangular delta-rule system, in matmuls) is batched
over every chunk at once; only a short pass (three small matmuls per chunk for RWKV-7, two for
RWKV-6) carries the state from chunk to chunk.
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
# chunked (parallel within a chunk, one small sequential step per chunk)
# Chunked tensors are (C, B, H, L, N): chunk-major, so each step of the sequential pass reads one
# contiguous slice; inputs are read through strided views (no copy) by the first op that uses them
# (as the second operand: an elementwise result takes the memory layout of its first operand).


def _chunks(x: Tensor, L: int) -> Tensor:
    """(B, T, H, N) -> a (C, B, H, L, N) view, zero-padded at the end to C*L tokens (a copy then)."""
    B, T, H, N = x.shape
    pad = (-T) % L
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad))
    return x.view(B, (T + pad) // L, L, H, N).permute(1, 0, 3, 2, 4)


def _unchunk(y: Tensor, T: int) -> Tensor:
    """(C, B, H, L, N) -> (B, T, H, N)."""
    C, B, H, L, N = y.shape
    return y.permute(1, 0, 3, 2, 4).reshape(B, C * L, H, N)[:, :T]


def _span_limit(dtype: torch.dtype) -> float:
    """Largest decay span (-sum of lw over a chunk) whose half still has a finite, normal exp."""
    return 120.0 if dtype == torch.float32 else 1200.0


def _chunk_len(lw: Tensor, chunk_size: int) -> int:
    """The largest power-of-two chunk length <= chunk_size whose every chunk spans at most the
    limit (RWKV-7 decays are bounded, so this is chunk_size there; strong RWKV-6 decays shrink it)."""
    B, T, H, N = lw.shape
    L = 1 << max(0, min(chunk_size, T).bit_length() - 1)
    limit = _span_limit(lw.dtype)
    span = -lw.detach()
    if float(span.amax()) * L <= limit:  # cheap sufficient test; always true for RWKV-7 at L <= 128
        return L
    while L > 1:
        padded = torch.nn.functional.pad(span.clamp(max=limit), (0, 0, 0, 0, 0, (-T) % L))
        if float(padded.view(B, -1, L, H, N).sum(2).amax()) <= limit:
            break
        L //= 2
    return L


def _decays(lw: Tensor, chunk_size: int) -> tuple[int, Tensor, Tensor, Tensor]:
    """Chunk lw (B, T, H, N): returns L, G - c (C, B, H, L, N) and lw (a view of that shape) and
    c (C, B, H, 1, N), with G the inclusive cumsum of lw in each chunk and c = G_L / 2 the midpoint
    reference that keeps every factor e^{+-(G - c)} finite and normal (e^{G_L - G} = e^{c-G} e^c)."""
    L = _chunk_len(lw, chunk_size)
    limit = _span_limit(lw.dtype)
    if float(lw.detach().amin()) < -limit:
        lw = lw.clamp(min=-limit)  # exp(-120) is 0 in fp32 already: no visible change
    lw = _chunks(lw, L)
    G = lw.transpose(-1, -2).cumsum(-1)  # (C, B, H, N, L): a CPU cumsum is far faster on the last dim
    c = G[..., -1:] / 2
    return L, (G - c).transpose(-1, -2).contiguous(), lw, c.transpose(-1, -2)


def _unit_lower_inverse(A: Tensor) -> Tensor:
    """(I - A)^-1 for strictly lower-triangular A (..., L, L), L a power of two, in batched matmuls
    (far faster on CPU than a batched triangular solve of small matrices). Up to 16 by doubling,
    (I - A)^-1 = (I + A)(I + A^2)(I + A^4)...(I + A^{L/2}) (A^L = 0); above, by halves:
    [[T11, 0], [T22 A21 T11, T22]] with T11, T22 the inverses of the diagonal halves."""
    L = A.shape[-1]
    if L > 16:
        h = L // 2
        top, bottom = A.split(h, -2)
        T11, T22 = _unit_lower_inverse(torch.stack([top[..., :h], bottom[..., h:]])).unbind(0)
        T21 = T22 @ (bottom[..., :h] @ T11)
        return torch.cat([torch.cat([T11, torch.zeros_like(T11)], -1), torch.cat([T21, T22], -1)], -2)
    T = A + torch.eye(L, dtype=A.dtype, device=A.device)
    P = A
    for _ in range(L.bit_length() - 2):
        P = P @ P
        T = T + P @ T
    return T


def _causal_mask(L: int, dtype: torch.dtype, device) -> Tensor:
    """(2L, 2L) 0/1 mask of the blocks [[ab, ak], [rb, rk]]: s < t in the top row, s <= t below."""
    ones = torch.ones(L, L, dtype=dtype, device=device)
    return torch.cat([ones.tril(-1).repeat(1, 2), ones.tril().repeat(1, 2)], 0)


def wkv7_chunked(r, lw, k, v, a, b, state: Tensor | None = None, chunk_size: int = 16) -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV, same contract as `wkv7_recurrent`, chunk-parallel (a WY-style form).

    Per chunk (G / Gx inclusive / exclusive cumulative lw, S the chunk's initial state), with
    A_xy[t, s] = sum_i x_t,i y_s,i e^{G(x)_t,i - G_s,i} (s < t for x = a, s <= t for x = r):
        W = (I - A_ab)^-1 (a*e^Gx),   U = (I - A_ab)^-1 A_ak V      (all chunks at once)
        V' = U + W S          (V'_t = a_t^T S_{t-1}: the only sequential work, with the next line)
        S_L = e^{G_L} S + [b*e^{G_L-G}; k*e^{G_L-G}]^T [V'; V]
        Y = (r*e^G) S + [A_rb, A_rk] [V'; V]     (the first term in the pass, the rest at once)."""
    dt, T, out_dt = _compute_dtype(r), r.shape[1], r.dtype
    s = _zero_state(r, dt) if state is None else state.to(dt)
    L, Gc, lw, c = _decays(lw.to(dt), chunk_size)
    r, k, v, a, b = (_chunks(t.to(dt), L) for t in (r, k, v, a, b))
    Ei = (-Gc).exp()
    X = torch.cat([(Gc - lw).exp() * a, Gc.exp() * r], -2)  # (C, B, H, 2L, N) rows [a | r] at their decays
    Y = torch.cat([Ei * b, Ei * k], -2)
    A = (X @ Y.transpose(-1, -2)) * _causal_mask(L, dt, r.device)  # blocks [[ab, ak], [rb, rk]]
    top, bottom = A.split(L, -2)  # split, not slicing: its backward fills no zeros
    A_ab, A_ak = top.split(L, -1)
    Tinv = _unit_lower_inverse(A_ab)
    ec = c.exp()
    Xa, Xr = (X * ec).split(L, -2)  # a*e^Gx, r*e^G
    v = v.contiguous()
    W, U = Tinv @ Xa, Tinv @ (A_ak @ v)
    BKt = (Y * ec).transpose(-1, -2)  # [b*e^{G_L-G}; k*e^{G_L-G}]^T (C, B, H, N, 2L)
    decay = (ec * ec).transpose(-1, -2)  # e^{G_L} (C, B, H, N, 1)
    B, H, N = s.shape[:3]
    s, ys, vvs = s.reshape(B * H, N, N), [], []
    for w_c, xr_c, u_c, v_c, bkt_c, d_c in zip(*(x.flatten(1, 2) for x in (W, Xr, U, v, BKt, decay))):
        vv = torch.cat([torch.baddbmm(u_c, w_c, s), v_c], -2)  # [V'; V], V' = U + W S
        ys.append(torch.bmm(xr_c, s))  # (r*e^G) S
        s = torch.baddbmm(s * d_c, bkt_c, vv)
        vvs.append(vv)
    y = (torch.stack(ys) + bottom.flatten(1, 2) @ torch.stack(vvs)).unflatten(1, (B, H))
    return _unchunk(y, T).to(out_dt), s.view(B, H, N, N)


def wkv6_chunked(r, lw, k, v, u, state: Tensor | None = None, chunk_size: int = 16) -> tuple[Tensor, Tensor]:
    """RWKV-6 WKV, same contract as `wkv6_recurrent`, chunk-parallel.

    Per chunk: Y = (r*e^Gx) S + A_rk V + diag(r . (u*k)) V with A_rk[t, s] (s < t) =
    sum_i r_t,i k_s,i e^{Gx_t,i - G_s,i};  S_L = e^{G_L} S + (k*e^{G_L-G})^T V."""
    dt, T, out_dt = _compute_dtype(r), r.shape[1], r.dtype
    s = _zero_state(r, dt) if state is None else state.to(dt)
    L, Gc, lw, c = _decays(lw.to(dt), chunk_size)
    r, k, v = (_chunks(t.to(dt), L) for t in (r, k, v))
    v = v.contiguous()
    Xr, Yk, ec = (Gc - lw).exp() * r, (-Gc).exp() * k, c.exp()
    Xe, Kt, decay = Xr * ec, (Yk * ec).transpose(-1, -2), (ec * ec).transpose(-1, -2)
    B, H, N = s.shape[:3]
    s, ys = s.reshape(B * H, N, N), []
    for xe_c, kt_c, v_c, d_c in zip(*(x.flatten(1, 2) for x in (Xe, Kt, v, decay))):
        ys.append(torch.bmm(xe_c, s))
        s = torch.baddbmm(s * d_c, kt_c, v_c)
    bonus = (r * k * u.to(dt)[:, None, :]).sum(-1, keepdim=True) * v
    y = torch.stack(ys).unflatten(1, (B, H)) + (Xr @ Yk.transpose(-1, -2)).tril(-1) @ v + bonus
    return _unchunk(y, T).to(out_dt), s.view(B, H, N, N)


# ----------------------------------------------------------------------------------------------
# dispatch


def _use_fla(x: Tensor, kernel) -> bool:
    return kernel is not None and x.is_cuda


def wkv7(r, lw, k, v, a, b, state: Tensor | None = None, chunk_size: int = 16) -> tuple[Tensor, Tensor]:
    """RWKV-7 WKV for the model: fla's DPLR kernel on CUDA when installed, else `wkv7_chunked`."""
    if _use_fla(r, _fla_dplr):
        s0 = None if state is None else state.float()
        y, s = _fla_dplr(q=r, k=k, v=v, a=a, b=b, gk=lw.float(), scale=1.0, initial_state=s0, output_final_state=True)
        return y.to(r.dtype), s
    return wkv7_chunked(r, lw, k, v, a, b, state, chunk_size)


def wkv6(r, lw, k, v, u, state: Tensor | None = None, chunk_size: int = 16) -> tuple[Tensor, Tensor]:
    """RWKV-6 WKV for the model: fla's chunk_rwkv6 on CUDA when installed, else `wkv6_chunked`."""
    if _use_fla(r, _fla_rwkv6):
        s0 = None if state is None else state.float()
        y, s = _fla_rwkv6(r, k, v, lw.float(), u, scale=1.0, initial_state=s0, output_final_state=True)
        return y.to(r.dtype), s
    return wkv6_chunked(r, lw, k, v, u, state, chunk_size)
