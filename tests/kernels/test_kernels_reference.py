"""Fused Flash-Bone functions vs the plain-autograd reference in `bone.variants`."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bone import variants
from bone.errors import UsageError
from bone.kernels import MINI_FOLD_TOKENS_PER_SLICE, SHARD_FOLD_TOKENS_PER_SLICE, ShardFn, folds

EPS = {torch.float32: 2.0 ** -23, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}


def _run(fn, x, w, b, blk, drop=None, seed=0):
    x = x.detach().requires_grad_()
    blk = blk.detach().requires_grad_()
    torch.manual_seed(seed)
    y = fn(x, w, b, blk, drop)
    gy = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape).to(y.dtype)
    dx, db = torch.autograd.grad(y, (x, blk), gy)
    return y, dx, db


def _assert_close_as_reference(variant, x, w, b, blk, chunk=4096, drop=None, keep_merged=False, fn=None):
    """The fused result (of `fn`, default the variant's fused function) may differ from the float64
    truth at most a few times as much as the reference computed in the same dtypes does (plus a few
    ulps of the output scale)."""
    ref = variants.get(variant).forward
    fused = _run(fn or variants.get(variant).fused(chunk, keep_merged), x, w, b, blk, drop)
    low = _run(ref, x, w, b, blk, drop)
    d = lambda t: None if t is None else t.detach().double()  # noqa: E731
    truth = _run(ref, d(x), d(w), d(b), d(blk), drop)
    for name, f, lo, t in zip(("y", "dx", "dblock"), fused, low, truth):
        assert f.dtype == lo.dtype and f.shape == lo.shape, name
        scale = t.abs().max().item()
        eps = EPS[min(x.dtype, blk.dtype, key=lambda dt: -EPS[dt])]  # the coarser dtype
        ref_err = (lo.double() - t).abs().max().item()
        err = (f.double() - t).abs().max().item()
        assert err <= 4 * ref_err + 8 * eps * scale, f"{variant} {name}: fused err {err:.3g}, reference err {ref_err:.3g}"


MINI_R = {"col": None, "row": None, "shard": None, "mini": 4}


@pytest.mark.parametrize("variant", ["col", "row", "shard", "mini"])
@pytest.mark.parametrize("base,adapter", [(torch.float32, torch.float32), (torch.bfloat16, torch.float32),
                                          (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32),
                                          (torch.float16, torch.float16)])
def test_dtypes(case, variant, base, adapter):
    x, w, b, blk = case(variant, 32, 24, 8, mini_r=MINI_R[variant], dtype=base, block_dtype=adapter, lead=(3, 7))
    _assert_close_as_reference(variant, x, w, b, blk, chunk=16)
    if variants.get(variant).builds_merged:
        _assert_close_as_reference(variant, x, w, b, blk, chunk=16, keep_merged=True)


@pytest.mark.parametrize("variant", ["col", "row", "shard", "mini"])
def test_conv1d_transposed_weight_and_no_bias(case, variant):
    x, w, b, blk = case(variant, 24, 16, 8, mini_r=MINI_R[variant], dtype=torch.float32, transposed=True, bias=False)
    assert not w.is_contiguous()
    _assert_close_as_reference(variant, x, w, b, blk, chunk=8)
    if variants.get(variant).builds_merged:
        _assert_close_as_reference(variant, x, w, b, blk, chunk=8, keep_merged="auto")


@pytest.mark.parametrize("variant,mini_r", [("shard", None), ("mini", 4)])
@pytest.mark.parametrize("fold,keep", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("in_,chunk", [(24, 4096), (27, 5)])  # whole / ragged slices, one / several chunks
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shard_fold_and_product_paths(case, variant, mini_r, fold, keep, in_, chunk, dtype):
    """Both ways ShardFn computes shard/mini (W + dW folded, or the s M and g M^T products) match the
    reference; ShardForward picks between them by token count (`bone.kernels.folds`)."""
    x, w, b, blk = case(variant, 24, in_, 8, mini_r=mini_r, lead=(3, 7), dtype=dtype)
    fn = lambda x, w, b, blk, drop: ShardFn.apply(x, w, b, blk, 0.0, chunk, keep, fold)  # noqa: E731
    _assert_close_as_reference(variant, x, w, b, blk, fn=fn)


@pytest.mark.parametrize("mini,per_slice", [(False, SHARD_FOLD_TOKENS_PER_SLICE), (True, MINI_FOLD_TOKENS_PER_SLICE)])
def test_fold_rule(mini, per_slice):
    """shard/mini fold from their tokens-per-input-slice constant on (a ragged last slice counts)."""
    assert not folds(4 * per_slice - 1, 256, 64, mini) and folds(4 * per_slice, 256, 64, mini)
    assert not folds(5 * per_slice - 1, 257, 64, mini) and folds(5 * per_slice, 257, 64, mini)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=st.sampled_from(["col", "row", "shard", "mini"]), r=st.sampled_from([1, 2, 4, 8]),
       a=st.integers(1, 5), k=st.integers(1, 5), rem=st.integers(0, 7), lead=st.lists(st.integers(1, 4), max_size=3),
       chunk=st.integers(1, 50), transposed=st.booleans(), base=st.sampled_from([torch.float32, torch.bfloat16]),
       keep=st.booleans())
def test_property_shapes(case, variant, r, a, k, rem, lead, chunk, transposed, base, keep):
    """Any whole-block shape for col/row; any in (ragged) for shard/mini; any chunk size; merged weight kept or rebuilt."""
    out, in_ = a * r, k * r
    mini_r = None
    if variant in ("shard", "mini"):
        in_ = max(r, in_ + rem % r)
        out = a * 3
        mini_r = 3 if variant == "mini" else None
    x, w, b, blk = case(variant, out, in_, r, mini_r=mini_r, lead=tuple(lead), dtype=base,
                              block_dtype=torch.float32, transposed=transposed)
    _assert_close_as_reference(variant, x, w, b, blk, chunk=chunk, keep_merged=keep and variants.get(variant).builds_merged)


@pytest.mark.parametrize("variant", ["shard", "mini"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_mask_matches_reference(case, variant, dtype):
    """Same RNG state -> the same mask as the reference, in forward and (redrawn) backward, and
    the caller's RNG stream ends where the reference leaves it."""
    x, w, b, blk = case(variant, 12, 20, 8, mini_r=MINI_R[variant] and 3, dtype=dtype, block_dtype=torch.float32)
    drop = torch.nn.Dropout(0.5)
    ref = _run(variants.get(variant).forward, x, w, b, blk, drop, seed=7)
    after_ref = torch.get_rng_state()
    fused = _run(variants.get(variant).fused(4096), x, w, b, blk, drop, seed=7)
    assert torch.equal(torch.get_rng_state(), after_ref)
    for f, r_ in zip(fused, ref):
        torch.testing.assert_close(f, r_, rtol=1e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-5)
    other = _run(variants.get(variant).fused(4096), x, w, b, blk, drop, seed=8)
    assert not torch.allclose(other[1], fused[1])  # a different seed draws a different mask
    drop.eval()  # eval mode: no dropout at all
    torch.testing.assert_close(_run(variants.get(variant).fused(4096), x, w, b, blk, drop)[0],
                               _run(variants.get(variant).forward, x, w, b, blk, None)[0])


@pytest.mark.parametrize("variant,p", [("col", 0.0), ("row", 0.0), ("shard", 0.0), ("shard", 0.3), ("mini", 0.3)])
def test_torch_compile_and_checkpoint(case, variant, p):
    """dynamo traces the Functions (aot_eager backend: no C++ toolchain needed) and non-reentrant
    checkpointing recomputes them; both give the eager gradients."""
    x, w, b, blk = case(variant, 16, 12, 4, mini_r=MINI_R[variant], dtype=torch.float32)
    fn = variants.get(variant).fused(8)
    drop = torch.nn.Dropout(p) if p else None
    eager = _run(fn, x, w, b, blk, drop, seed=3)
    # one graph without dropout; with dropout the RNG-state capture is a graph break (documented)
    compiled_fn = torch.compile(fn, backend="aot_eager", fullgraph=drop is None)

    def dynamic_batch(x, *rest):  # token counts vary between steps: trace the batch dim symbolically
        torch._dynamo.mark_dynamic(x, 0)
        return compiled_fn(x, *rest)

    compiled = _run(dynamic_batch, x, w, b, blk, drop, seed=3)
    ckpt = _run(lambda *a: torch.utils.checkpoint.checkpoint(fn, *a, use_reentrant=False), x, w, b, blk, drop, seed=3)
    for e, c, k in zip(eager, compiled, ckpt):
        torch.testing.assert_close(c, e)
        torch.testing.assert_close(k, e)


def test_forward_fns_pickle(case):
    """The callables a BoneLinear stores survive pickling (whole-model torch.save, multiprocessing)."""
    import pickle

    for variant in ("col", "row", "shard", "mini"):
        x, w, b, blk = case(variant, 8, 8, 4, mini_r=MINI_R[variant] and 2, dtype=torch.float32)
        fn = pickle.loads(pickle.dumps(variants.get(variant).fused(4)))
        torch.testing.assert_close(fn(x, w, b, blk, None), variants.get(variant).fused(4)(x, w, b, blk, None))


def test_bad_inputs_fail_clearly(case):
    with pytest.raises(ValueError, match="unknown Bone variant"):
        variants.get("diag").fused(64)
    with pytest.raises(ValueError, match="chunk_size"):
        variants.get("col").fused(0)
    with pytest.raises(ValueError, match="keep_merged must be True, False or 'auto', got 'sometimes'"):
        variants.get("shard").fused(64, "sometimes")
    x, w, b, blk = case("col", 8, 8, 4, dtype=torch.float32)
    with pytest.raises(UsageError, match="frozen"):
        variants.get("col").fused(64)(x, w.requires_grad_(), b, blk, None)
    x, w, b, blk = case("shard", 8, 8, 4, dtype=torch.float32)
    with pytest.raises(TypeError, match="nn.Dropout"):
        variants.get("shard").fused(64)(x, w, b, blk, torch.nn.ReLU())
