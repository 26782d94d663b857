"""The frozen weight as the Flash-Bone kernels read it: `WeightRows`, one chunk of output rows at a time.

Every kernel reads W `(out, in)` through this interface, so a plain tensor and a quantized base
(`bone.quant`) run the same kernel code:

  shape, dtype   `(out, in)` and the dtype of the base product (a quantized layer's compute dtype)
  rows(o0, o1, dt)   W[o0:o1] `(o1 - o0, in)` in dtype dt: a view or cast for a plain weight, the
                 dequantized rows for a quantized one (nothing outside those rows is materialised)
  whole(dt)      W itself when that costs no copy (a plain weight already in dt), else None: the
                 kernels then loop over `rows` chunks
  folds(dt)      whether shard/mini may fold their delta into W's row chunks (a plain weight in the
                 block's dtype); a quantized base keeps its own product instead
  linear(x, bias)    x W^T + bias without autograd, by the layer's own product (F.linear, or the
                 quantized layer's matmul)
  grad_input(g, rows)    g W, `rows` output rows of W at a time when W is not stored plainly
  dense()        the whole W as a tensor, for the pure reference path: a plain weight itself, a
                 quantized one dequantized in fp32
  source()       the frozen tensor that stores W (a plain weight, a quantized layer's packed codes):
                 `stamp(source())` changes whenever W may have been written (see `stamp`)

`DenseRows` wraps a plain tensor (possibly a transposed view, as transformers' Conv1D weight.t()).
`frozen_linear` is the base layer alone (a merged, disabled or adapter-less BoneLinear): F.linear
for a tensor, and for a WeightRows its own product with g W in row chunks as the input gradient.
Kernels take either a tensor or a WeightRows as `w` (`as_rows`); `save` / `saved` keep a plain
weight through `ctx.save_for_backward` (the frozen parameter itself, no copy) and a WeightRows on
ctx (it refers only to the layer's own frozen storage: packed codes and scales, never a copy).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

ROWS = 4096  # output rows per chunk of `frozen_linear`'s input gradient


class WeightRows:
    """Interface: a frozen `(out, in)` weight read in chunks of output rows (see the module docstring)."""

    shape: tuple[int, int]
    dtype: torch.dtype
    requires_grad: bool = False

    def rows(self, o0: int, o1: int, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def whole(self, dtype: torch.dtype) -> Tensor | None:
        return None

    def folds(self, dtype: torch.dtype) -> bool:
        return False

    def linear(self, x: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def grad_input(self, g: Tensor, rows: int) -> Tensor:
        """g `(T, out)` @ W in `self.dtype`, `rows` output rows of W at a time."""
        g = g.to(self.dtype)
        h = None
        for o0 in range(0, self.shape[0], rows):
            wc, gc = self.rows(o0, o0 + rows, self.dtype), g[:, o0:o0 + rows]
            h = gc @ wc if h is None else h.addmm_(gc, wc)
        return h

    def dense(self) -> Tensor:
        return self.rows(0, self.shape[0], torch.float32)

    def source(self) -> Tensor:
        """The frozen tensor that stores W (subclasses keep it as `weight`)."""
        return self.weight


class DenseRows(WeightRows):
    """A plain weight tensor `(out, in)` (any strides)."""

    def __init__(self, w: Tensor):
        self.w = w
        self.shape = tuple(w.shape)
        self.dtype = w.dtype
        self.requires_grad = w.requires_grad

    def rows(self, o0, o1, dtype):
        return self.w[o0:o1].to(dtype)

    def whole(self, dtype):
        return self.w if self.w.dtype == dtype else None

    def folds(self, dtype):
        return self.w.dtype == dtype

    def linear(self, x, bias):
        return F.linear(x, self.w, bias)

    def grad_input(self, g, rows):
        return g.to(self.w.dtype) @ self.w

    def dense(self):
        return self.w

    def source(self):
        return self.w


def as_rows(w: Tensor | WeightRows) -> WeightRows:
    """`w` itself when it is a WeightRows, else a DenseRows around the tensor."""
    return w if isinstance(w, WeightRows) else DenseRows(w)


def dense(w: Tensor | WeightRows) -> Tensor:
    """The whole weight as a tensor: `w` itself, or a WeightRows' `dense()` (the reference path)."""
    return w if isinstance(w, Tensor) else w.dense()


def source(w: Tensor | WeightRows) -> Tensor:
    """The frozen tensor that stores the weight: `w` itself, or a WeightRows' `source()`."""
    return w if isinstance(w, Tensor) else w.source()


def stamp(t: Tensor) -> tuple:
    """What changes whenever `t` may have been written through autograd-visible ops: its version
    counter (in-place ops, `copy_`, optimizer steps), storage address (`.data =`, a load that
    replaces the tensor), dtype, device and shape. Writes through `.data` bypass the counter."""
    return (t._version, t.data_ptr(), t.dtype, t.device, tuple(t.shape))


def save(ctx, w: Tensor | WeightRows, *tensors: Tensor | None) -> None:
    """Keep `tensors` and the weight for backward (see the module docstring)."""
    if isinstance(w, Tensor):
        ctx.save_for_backward(*tensors, w)
        ctx.frozen = None
    else:
        ctx.save_for_backward(*tensors)
        ctx.frozen = w


def saved(ctx) -> tuple:
    """(WeightRows, *tensors) as `save` kept them."""
    t = ctx.saved_tensors
    if ctx.frozen is None:
        return (DenseRows(t[-1]), *t[:-1])
    return (ctx.frozen, *t)


class FrozenLinearFn(Function):
    """y = x W^T + bias for a WeightRows; dx = g W read in row chunks; saves nothing weight-sized."""

    @staticmethod
    def forward(ctx, x: Tensor, w: WeightRows, bias: Tensor | None) -> Tensor:
        ctx.frozen, ctx.x_meta = w, (x.shape, x.dtype)
        return w.linear(x, bias)

    @staticmethod
    def backward(ctx, g: Tensor):
        shape, dtype = ctx.x_meta
        dx = ctx.frozen.grad_input(g.reshape(-1, g.shape[-1]), ROWS)
        return dx.to(dtype).view(shape), None, None


def frozen_linear(x: Tensor, w: Tensor | WeightRows, bias: Tensor | None) -> Tensor:
    """The frozen base layer alone: x W^T + bias (see the module docstring)."""
    if isinstance(w, Tensor):
        return F.linear(x, w, bias)
    return FrozenLinearFn.apply(x, w, bias)
