"""The chunked WKV forms against the plain per-token recurrences (values, states and gradients).

Chunk lengths 1..64 are covered (T=50 with chunk 64 runs at 32, T=130 at 64 with a padded last
chunk), so the doubling inverse (L <= 16) and the block inverse (L = 32, 64) are both checked."""
import math

import pytest
import torch

from bone.models.rwkv.ops import wkv6, wkv6_chunked, wkv6_recurrent, wkv7, wkv7_chunked, wkv7_recurrent

B, H, N = 2, 2, 8


def _inputs7(T, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda: torch.randn(B, T, H, N, generator=g, dtype=dtype)  # noqa: E731
    kk = torch.nn.functional.normalize(rnd(), dim=-1)
    lw = -math.exp(-0.5) * torch.sigmoid(3 * rnd())  # RWKV-7's decay range
    return [rnd(), lw, 0.5 * rnd(), rnd(), -kk, kk * torch.rand(B, T, H, N, generator=g, dtype=dtype)]


def _inputs6(T, dtype=torch.float64, seed=0, strength=1.0):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda: torch.randn(B, T, H, N, generator=g, dtype=dtype)  # noqa: E731
    lw = -torch.exp(strength * rnd())
    return [rnd(), lw, rnd(), rnd(), torch.randn(H, N, generator=g, dtype=dtype)]


def _state(dtype=torch.float64):
    return torch.randn(B, H, N, N, generator=torch.Generator().manual_seed(9), dtype=dtype)


# kind -> (inputs, chunked form, per-token recurrence)
FORMS = {"rwkv7": (_inputs7, wkv7_chunked, wkv7_recurrent), "rwkv6": (_inputs6, wkv6_chunked, wkv6_recurrent)}


@pytest.mark.parametrize("kind", list(FORMS))
@pytest.mark.parametrize("T,chunk", [(1, 64), (7, 4), (37, 8), (64, 16), (50, 64), (130, 64)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_equals_recurrence(kind, T, chunk, with_state):
    inputs, chunked, loop = FORMS[kind]
    x = inputs(T)
    s0 = _state() if with_state else None
    y_ref, s_ref = loop(*x, state=s0)
    y, s = chunked(*x, state=s0, chunk_size=chunk)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_ref, rtol=1e-10, atol=1e-10)


def test_wkv6_very_strong_decay_stays_exact_in_fp32():
    """Decays down to exp(-exp(9)) per step: the chunk shrinks, nothing overflows, no NaN grads."""
    x = _inputs6(48, dtype=torch.float32, strength=3.0)
    x = [t.requires_grad_() for t in x]
    y_ref, s_ref = wkv6_recurrent(*[t.double() for t in x])
    y, s = wkv6_chunked(*x, chunk_size=64)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.double(), s_ref, rtol=1e-4, atol=1e-4)
    (y.sum() + s.sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in x)


@pytest.mark.parametrize("kind", list(FORMS))
@pytest.mark.parametrize("T,chunk", [(21, 8), (70, 64)])
def test_gradients_match_recurrence(kind, T, chunk):
    inputs, chunked, loop = FORMS[kind]
    x = inputs(T)
    s0 = _state()
    w = torch.randn(B, T, H, N, dtype=torch.float64)

    def grads(fn, **kw):
        xs = [t.clone().requires_grad_() for t in x] + [s0.clone().requires_grad_()]
        y, s = fn(*xs[:-1], state=xs[-1], **kw)
        ((y * w).sum() + s.square().sum()).backward()
        return [t.grad for t in xs]

    for g_chunk, g_loop in zip(grads(chunked, chunk_size=chunk), grads(loop)):
        torch.testing.assert_close(g_chunk, g_loop, rtol=1e-9, atol=1e-9)


def test_dispatch_keeps_dtype_and_matches_in_fp32():
    """wkv7/wkv6 (the model entry points) return the input dtype; bf16 inputs compute in fp32."""
    x7 = [t.float() for t in _inputs7(19)]
    y, s = wkv7(*x7, chunk_size=8)
    y_ref, _ = wkv7_recurrent(*x7)
    assert y.dtype == torch.float32 and s.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-5)
    yb, sb = wkv6(*[t.bfloat16() for t in _inputs6(19)[:4]], _inputs6(19)[4].float(), chunk_size=8)
    assert yb.dtype == torch.bfloat16 and sb.dtype == torch.float32
