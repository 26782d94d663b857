"""Flash-Bone shard and mini: one autograd Function that keeps only s = sum_j x_j for backward.

The adapter block is `(r, n)`: n = out for shard (M), n = mini_r for mini (Dm). Since mini's
M = Dm.repeat(1, out/n), the shard product s M is u = s Dm `(T, n)` added to every n-wide group
of the output, so both variants are one computation on the `(T, out/n, n)` view of y and mini
never builds the repeated `(r, out)` block.

  forward   y = F.linear(x, W, bias) [weight dtype] + u broadcast over groups [block dtype],
            s = slice_sum(dropout(x)) `(T, r)`, u = s block
  backward  gs = sum over groups of g `(T, n)`, dblock = s^T gs, ds = gs block^T `(T, r)`,
            dx = g W + mask * tiled(ds)
  saved     s, the block and the frozen W parameter (no copy): no input-sized tensor, and no
            padded copy of x for in % r != 0 (see `bone.kernels.slices`).

The base product x W^T is the weight's own (`weights.WeightRows.linear`): F.linear for a plain
weight, the quantized layer's matmul for a quantized base; g W reads W in `chunk` output rows.

Folding. Without active dropout and with a plain weight of the block's dtype, the adapter may
be folded into the weight instead: y = x (W + dW)^T + bias and dx = g (W + dW), with W + dW
`chunk` output rows at a time (dW[o, j*r+i] = M[i, o], a transient, never saved). That replaces
the two `T x r x out` products s M and g M^T (2 T r out multiply-adds each) by two passes over
`(out, in)` memory; dblock = s^T gs stays either way. The caller picks (`fold`): the products cost
in proportion to the tokens T, the fold does not, so folding pays only from a number of tokens
proportional to in / r (`bone.kernels.folds`). Mixed dtypes never fold, because the reference runs
the shard product in the block's dtype.

Dropout: the mask is not saved. Forward records the RNG state of x's device just before drawing
it; backward restores that state in a forked RNG and redraws the same mask with F.dropout on a
tensor of ones (the mask already scaled by 1/(1-p)). The caller's RNG stream is left exactly as
after the reference forward. Costs a redraw in backward, saves T x in bytes per layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd import Function

from . import weights
from .slices import add_tiled_, mul_tiled_, slice_sum, tiled_plus


def dropout_p(dropout: nn.Module | None) -> float:
    """The active dropout probability of the adapter's dropout module (0.0 when inactive)."""
    if dropout is None or isinstance(dropout, nn.Identity):
        return 0.0
    if isinstance(dropout, nn.Dropout):
        return float(dropout.p) if dropout.training else 0.0
    raise TypeError(f"Flash-Bone supports nn.Dropout, nn.Identity or None as the adapter dropout, got {type(dropout).__name__}")


def _rng_state(device: torch.device) -> Tensor:
    if device.type == "cpu":
        return torch.get_rng_state()
    return torch.get_device_module(device.type).get_rng_state(device)


def _redraw_mask(like: Tensor, p: float, state: Tensor) -> Tensor:
    """The scaled dropout mask F.dropout drew for `like` when the RNG was in `state`."""
    dev = like.device
    devices = [] if dev.type == "cpu" else [dev]
    with torch.random.fork_rng(devices=devices, device_type=dev.type if devices else "cuda"):
        if dev.type == "cpu":
            torch.set_rng_state(state)
        else:
            torch.get_device_module(dev.type).set_rng_state(state, dev)
        return F.dropout(torch.ones_like(like), p, True)


def _shard_t(block: Tensor, out: int) -> Tensor:
    """M^T `(out, r)`, contiguous (mini's Dm repeated along out)."""
    n = block.shape[1]
    return block.t().contiguous() if n == out else block.t().repeat(out // n, 1)


def _merged_chunks(wr: weights.WeightRows, mt: Tensor, rows: int):
    """(o0, W'[o0:o0+rows]) with W' = W + M^T tiled along in; mt = M^T `(out, r)`."""
    for o0 in range(0, wr.shape[0], rows):
        yield o0, tiled_plus(wr.rows(o0, o0 + rows, wr.dtype), mt[o0:o0 + rows])


class ShardFn(Function):
    """y = x W^T + bias + slice_sum(dropout(x)) @ M for shard/mini; see the module docstring.
    fold=False takes the two-product path even where folding is possible; keep=True (folded path
    only) saves the W + dW chunks built in forward for backward's dx (one `(out, in)` tensor per
    call) instead of folding again."""

    @staticmethod
    def forward(ctx, x: Tensor, w, bias: Tensor | None, block: Tensor, p: float, chunk_size: int, keep: bool = False,
                fold: bool = True) -> Tensor:
        wr = weights.as_rows(w)
        dt, (out, in_), (r, n) = block.dtype, wr.shape, block.shape
        ctx.rng_state = _rng_state(x.device) if p else None
        ctx.merge = fold and not p and wr.folds(dt)
        keep = keep and ctx.merge and ctx.needs_input_grad[0]  # only dx reads W + dW
        rows = max(1, min(out, chunk_size))
        xd = F.dropout(x, p, True) if p else x
        s = slice_sum(xd.reshape(-1, in_), r, dt)
        kept = []
        if ctx.merge:
            x2, mt = x.reshape(-1, in_), _shard_t(block, out)
            ys = []
            for o0, wp in _merged_chunks(wr, mt, rows):
                ys.append(F.linear(x2, wp, None if bias is None else bias[o0:o0 + rows]))
                if keep:
                    kept.append(wp)
            y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)
        else:
            base = wr.linear(x, bias).reshape(-1, out)
            if n == out and base.dtype == dt:  # shard: y += s M in one fused GEMM
                y = base.addmm_(s, block)
            else:
                u = (s @ block)[:, None, :]  # (T, 1, n): mini's u fills every n-wide group
                base = base.view(-1, out // n, n)
                y = base + u if base.dtype != dt else base.add_(u)
        weights.save(ctx, w, s, block, *kept)
        ctx.x_meta = (x.shape, x.dtype)
        ctx.p, ctx.rows = p, rows
        return y.view(*x.shape[:-1], out)

    @staticmethod
    def backward(ctx, g: Tensor):
        wr, s, block, *kept = weights.saved(ctx)
        dt, (out, in_), n = block.dtype, wr.shape, block.shape[1]
        x_shape, x_dtype = ctx.x_meta
        g2 = g.reshape(-1, out)
        gs = g2 if n == out and g2.dtype == dt else g2.view(-1, out // n, n).sum(1, dtype=dt)  # (T, n)
        dx = db = None
        if ctx.needs_input_grad[3]:
            db = s.t() @ gs
        if ctx.needs_input_grad[0] and ctx.merge:
            folded = zip(range(0, out, ctx.rows), kept) if kept else _merged_chunks(wr, _shard_t(block, out), ctx.rows)
            gw = g2.to(wr.dtype)  # g is in the autocast dtype under autocast
            for o0, wp in folded:
                gc = gw[:, o0:o0 + ctx.rows]
                dx = gc @ wp if dx is None else dx.addmm_(gc, wp)
            dx = dx.to(x_dtype).view(x_shape)
        elif ctx.needs_input_grad[0]:
            ds = gs @ block.t()  # (T, r)
            dx = wr.grad_input(g2, ctx.rows)
            if ctx.p:
                mask = _redraw_mask(torch.empty(x_shape, dtype=x_dtype, device=g.device), ctx.p, ctx.rng_state)
                dx.add_(mul_tiled_(mask.reshape(-1, in_), ds))
            else:
                add_tiled_(dx, ds)
            dx = dx.to(x_dtype).view(x_shape)
        return dx, None, None, db, None, None, None, None
