"""Triton kernels for Flash-Bone col: the block transform happens on W tiles in registers.

For output block a and input block b the kernel loads the r x r tile W[a,b] and B[a] and forms
W'[a,b] = W[a,b] (I + B[a]) + B[a] with one r x r x r `tl.dot`; W' is never written to memory.
Tiles are r wide along both W dimensions, so r must be a power of two >= 16 (tl.dot's minimum).

  col_fwd   y[m-tile, a] = sum_b x[m-tile, b] W'[a,b]^T (+ bias)        grid (T/BM, out/r)
  col_dx    dx[m-tile, b] = sum_a g[m-tile, a] W'[a,b]                   grid (T/BM, in/r)
  col_db    part[s, a] = sum_{b = s, s+S, ...} (W[a,b] + I)^T G[a,b],
            G[a,b] = sum_t g[t, a]^T x[t, b] accumulated BT tokens at a time   grid (out/r, S)

Dot inputs are rounded to the block's dtype (the reference's compute dtype), accumulation is fp32.
F32 (constexpr) multiplies those rounded inputs as exact fp32 (IEEE) dots: used for fp32 blocks,
and for every dtype under Triton's CPU interpreter, whose bf16 `tl.dot` is wrong.
Importing this module imports triton; set TRITON_INTERPRET before that to run it on the CPU.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, F32: tl.constexpr):
    """a @ b with fp32 accumulation; F32: as exact fp32 products of the given values."""
    if F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _merged_tile(w_ptr, b_ptr, a, kb, swo, swi, R: tl.constexpr, F32: tl.constexpr):
    """W'[a, kb] `(R, R)` in the block dtype, built from the W tile and B[a] in registers."""
    offs = tl.arange(0, R)
    blk = tl.load(b_ptr + a * R * R + offs[:, None] * R + offs[None, :])
    cdt = blk.dtype
    wt = tl.load(w_ptr + (a * R + offs)[:, None] * swo + (kb * R + offs)[None, :] * swi).to(cdt)
    eye = (offs[:, None] == offs[None, :]).to(tl.float32)
    wp = _dot(wt, (eye + blk.to(tl.float32)).to(cdt), F32) + blk.to(tl.float32)
    return wp.to(cdt)


@triton.jit
def col_fwd(x_ptr, w_ptr, b_ptr, bias_ptr, y_ptr, T, IN,
            sxt, sxi, swo, swi, syt, syo,
            HAS_BIAS: tl.constexpr, R: tl.constexpr, BM: tl.constexpr, F32: tl.constexpr):
    pid_m = tl.program_id(0)
    a = tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_r = tl.arange(0, R)
    row_ok = offs_m[:, None] < T
    acc = tl.zeros((BM, R), dtype=tl.float32)
    for kb in range(0, IN // R):
        wp = _merged_tile(w_ptr, b_ptr, a, kb, swo, swi, R, F32)
        xt = tl.load(x_ptr + offs_m[:, None] * sxt + (kb * R + offs_r)[None, :] * sxi, mask=row_ok, other=0.0)
        acc += _dot(xt.to(wp.dtype), tl.trans(wp), F32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + a * R + offs_r).to(tl.float32)[None, :]
    tl.store(y_ptr + offs_m[:, None] * syt + (a * R + offs_r)[None, :] * syo, acc.to(y_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def col_dx(g_ptr, w_ptr, b_ptr, dx_ptr, T, OUT,
           sgt, sgo, swo, swi, sdt, sdi,
           R: tl.constexpr, BM: tl.constexpr, F32: tl.constexpr):
    pid_m = tl.program_id(0)
    kb = tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_r = tl.arange(0, R)
    row_ok = offs_m[:, None] < T
    acc = tl.zeros((BM, R), dtype=tl.float32)
    for a in range(0, OUT // R):
        wp = _merged_tile(w_ptr, b_ptr, a, kb, swo, swi, R, F32)
        gt = tl.load(g_ptr + offs_m[:, None] * sgt + (a * R + offs_r)[None, :] * sgo, mask=row_ok, other=0.0)
        acc += _dot(gt.to(wp.dtype), wp, F32)
    tl.store(dx_ptr + offs_m[:, None] * sdt + (kb * R + offs_r)[None, :] * sdi, acc.to(dx_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def col_db(g_ptr, x_ptr, w_ptr, part_ptr, T, IN, OUT,
           sgt, sgo, sxt, sxi, swo, swi,
           R: tl.constexpr, BT: tl.constexpr, SPLIT: tl.constexpr):
    a = tl.program_id(0)
    sp = tl.program_id(1)
    offs_r = tl.arange(0, R)
    offs_t = tl.arange(0, BT)
    eye = (offs_r[:, None] == offs_r[None, :]).to(tl.float32)
    acc = tl.zeros((R, R), dtype=tl.float32)
    for kb in range(sp, IN // R, SPLIT):
        gram = tl.zeros((R, R), dtype=tl.float32)
        for t0 in range(0, T, BT):
            t_ok = (t0 + offs_t)[:, None] < T
            gt = tl.load(g_ptr + (t0 + offs_t)[:, None] * sgt + (a * R + offs_r)[None, :] * sgo, mask=t_ok, other=0.0)
            xt = tl.load(x_ptr + (t0 + offs_t)[:, None] * sxt + (kb * R + offs_r)[None, :] * sxi, mask=t_ok, other=0.0)
            gram += tl.dot(tl.trans(gt.to(tl.float32)), xt.to(tl.float32), input_precision="ieee")
        wt = tl.load(w_ptr + (a * R + offs_r)[:, None] * swo + (kb * R + offs_r)[None, :] * swi).to(tl.float32)
        acc += tl.dot(tl.trans(wt + eye), gram, input_precision="ieee")
    tl.store(part_ptr + (sp * (OUT // R) + a) * R * R + offs_r[:, None] * R + offs_r[None, :], acc)
