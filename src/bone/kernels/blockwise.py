"""Flash-Bone col and row: autograd Functions that keep nothing weight-sized for backward.

Notation as in `bone.variants`: W `(out, in)`, r the block size, A = out/r output blocks,
K = in/r input blocks, x `(T, in)` the flattened input, g = dL/dy `(T, out)`, x_b / g_a the
r-wide slices.

col (B `(A, r, r)`), W'[a,b] = W[a,b] (I + B[a]) + B[a]:
  forward   y = x W'^T + bias, W' rebuilt `chunk` output rows at a time (never whole)
  backward  dx = g W' (same chunks), G_c = g_c^T x per chunk,
            dB[a] = sum_b W[a,b]^T G[a,b] + G[a,b] = bmm(G_c^T, W_c)^T + sum_b G_c[a,b]
  saved     x, B and the frozen W parameter itself (no copy; a quantized base's WeightRows, which
            refers to the layer's own codes and scales): no (out, in) temporary survives.

row (D `(K, r, r)`), W'[a,b] = W[a,b] (I + D[b]) + D[b] factorises exactly, so W' never exists:
  forward   y = x~ W^T + c (c added to every output block), x~_b = x_b (I + D[b])^T,
            c = sum_b x_b D[b]^T `(T, r)`
  backward  h = g W, q_b = h_b + sum_a g_a, dx_b = h_b + q_b D[b], dD[b] = q_b^T x_b
  so row costs the frozen layer's two GEMMs plus O(T * in * r) work.

Both compute in the block's dtype (as the reference); a base weight of another dtype is cast
`chunk` output rows at a time. `w` is a tensor, possibly a non-contiguous view (transformers
Conv1D: weight.t()), or a `weights.WeightRows` (a quantized base, dequantized `chunk` output rows
at a time in forward and again in backward: no full-precision copy of W is ever alive).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from . import weights


def _rows(chunk_size: int, r: int, out: int) -> int:
    """Output rows per chunk: a multiple of r, at least r, at most out."""
    return min(out, max(r, chunk_size // r * r))


def _blocks3(wc: Tensor, r: int) -> Tensor:
    """W rows `(c, in)` -> `(c/r, r * in/r, r)`: [a, (i b), j] = W[a*r+i, b*r+j]."""
    c, in_ = wc.shape
    return wc.reshape(c // r, r * (in_ // r), r)


def _col_merged(w3: Tensor, bc: Tensor) -> Tensor:
    """W'[a,b] = W[a,b] + W[a,b] B[a] + B[a] for the blocks in `w3` (see `_blocks3`); `(c, in)`.

    In fp32 / fp64 as W[a,b] (I + B[a]) + B[a]: one bmm writes the result (baddbmm's W + W B first
    copies W; the bmm form was ~18% faster at 512 x 1536 on this project's CPU). Rounding 1 + B moves
    each W' entry by at most 2^-24 of W (fp32), as much as rounding W' itself, but the same way down a
    whole column; in bf16 that shared step is 2^-9 (it doubled the mean column error of W' for a B[a] =
    0.003 I probe), so 16-bit blocks keep W + W B."""
    ca, rk, r = w3.shape
    if bc.dtype in (torch.float32, torch.float64):
        wp = torch.bmm(w3, bc + torch.eye(r, dtype=bc.dtype, device=bc.device))
    else:
        wp = torch.baddbmm(w3, w3, bc)
    wp.view(ca, r, rk // r, r).add_(bc[:, :, None, :])
    return wp.view(ca * r, rk)


class ColFn(Function):
    """y = x W'^T + bias for col; see the module docstring. keep=True saves the W' chunks built in
    forward for backward's dx (one `(out, in)` tensor per call) instead of rebuilding them."""

    @staticmethod
    def forward(ctx, x: Tensor, w, bias: Tensor | None, block: Tensor, chunk_size: int, keep: bool = False) -> Tensor:
        wr = weights.as_rows(w)
        dt, (out, in_), r = block.dtype, wr.shape, block.shape[-1]
        rows = _rows(chunk_size, r, out)
        keep = keep and ctx.needs_input_grad[0]  # only dx reads W'
        x2 = x.reshape(-1, in_).to(dt)
        bias = None if bias is None else bias.to(dt)
        chunks, kept = [], []
        for o0 in range(0, out, rows):
            wp = _col_merged(_blocks3(wr.rows(o0, o0 + rows, dt), r), block[o0 // r:(o0 + rows) // r])
            chunks.append(torch.nn.functional.linear(x2, wp, None if bias is None else bias[o0:o0 + rows]))
            if keep:
                kept.append(wp)
        y = chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)
        weights.save(ctx, w, x, block, *kept)
        ctx.rows = rows
        return y.view(*x.shape[:-1], out)

    @staticmethod
    def backward(ctx, g: Tensor):
        wr, x, block, *kept = weights.saved(ctx)
        dt, (out, in_), r, rows = block.dtype, wr.shape, block.shape[-1], ctx.rows
        need_x, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        g2 = g.reshape(-1, out).to(dt)
        x2 = x.reshape(-1, in_).to(dt)
        dx = torch.zeros_like(x2) if need_x and out > rows else None
        db = torch.empty_like(block) if need_b else None
        for i, o0 in enumerate(range(0, out, rows)):
            a0, a1 = o0 // r, (o0 + rows) // r
            gc = g2[:, o0:o0 + rows]
            w3 = _blocks3(wr.rows(o0, o0 + rows, dt), r) if need_b or not kept else None
            if need_x:
                wp = kept[i] if kept else _col_merged(w3, block[a0:a1])
                dx = gc @ wp if dx is None else dx.addmm_(gc, wp)
            if need_b:
                gram = (gc.t() @ x2).view(w3.shape)  # G for these output rows, blocked like w3
                wg = torch.bmm(gram.transpose(1, 2), w3).transpose(1, 2)  # sum_b W^T G (this order is the fast one)
                torch.add(wg, gram.view(-1, r, in_ // r, r).sum(2), out=db[a0:a1])  # + sum_b G
        dx = None if dx is None else dx.to(x.dtype).view(x.shape)
        return dx, None, None, db, None, None


def _linear_cast(x2: Tensor, wr: weights.WeightRows, dt: torch.dtype, rows: int) -> Tensor:
    """x2 `(T, in)` @ W^T in dtype dt, reading W `rows` output rows at a time unless it is whole in dt."""
    whole = wr.whole(dt)
    if whole is not None:
        return x2 @ whole.t()
    return torch.cat([x2 @ wr.rows(o0, o0 + rows, dt).t() for o0 in range(0, wr.shape[0], rows)], dim=1)


def _grad_cast(g2: Tensor, wr: weights.WeightRows, dt: torch.dtype, rows: int) -> Tensor:
    """g2 `(T, out)` @ W in dtype dt, reading W `rows` output rows at a time unless it is whole in dt."""
    whole = wr.whole(dt)
    if whole is not None:
        return g2 @ whole
    h = None
    for o0 in range(0, wr.shape[0], rows):
        wc, gc = wr.rows(o0, o0 + rows, dt), g2[:, o0:o0 + rows]
        h = gc @ wc if h is None else h.addmm_(gc, wc)
    return h


class RowFn(Function):
    """y = x W'^T + bias for row, through the exact factorisation in the module docstring."""

    @staticmethod
    def forward(ctx, x: Tensor, w, bias: Tensor | None, block: Tensor, chunk_size: int) -> Tensor:
        wr = weights.as_rows(w)
        dt, (out, in_), r = block.dtype, wr.shape, block.shape[-1]
        rows = _rows(chunk_size, r, out)
        x2 = x.reshape(-1, in_).to(dt)
        t = x2.shape[0]
        x3 = x2.view(t, in_ // r, r).transpose(0, 1)  # (K, T, r)
        xd = torch.bmm(x3, block.transpose(1, 2))  # x_b D[b]^T, (K, T, r)
        xt = (x3 + xd).transpose(0, 1).reshape(t, in_)  # x~
        y = _linear_cast(xt, wr, dt, rows)
        y.view(t, out // r, r).add_(xd.sum(0)[:, None, :])
        if bias is not None:
            y.add_(bias.to(dt))
        weights.save(ctx, w, x, block)
        ctx.rows = rows
        return y.view(*x.shape[:-1], out)

    @staticmethod
    def backward(ctx, g: Tensor):
        wr, x, block = weights.saved(ctx)
        dt, (out, in_), r = block.dtype, wr.shape, block.shape[-1]
        g2 = g.reshape(-1, out).to(dt)
        t = g2.shape[0]
        h = _grad_cast(g2, wr, dt, ctx.rows)  # g W, (T, in)
        q3 = (h.view(t, in_ // r, r) + g2.view(t, out // r, r).sum(1)[:, None, :]).transpose(0, 1)
        dx = db = None
        if ctx.needs_input_grad[0]:
            dx = h.view(t, in_ // r, r).add_(torch.bmm(q3, block).transpose(0, 1))
            dx = dx.reshape(x.shape).to(x.dtype)
        if ctx.needs_input_grad[3]:
            x3 = x.reshape(-1, in_).to(dt).view(t, in_ // r, r).transpose(0, 1)
            db = torch.bmm(q3.transpose(1, 2), x3)
        return dx, None, None, db, None
