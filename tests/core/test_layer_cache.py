"""The inference cache of BoneAdapter (BoneConfig.cache_merged): a forward without autograd reuses the
effective weight, and every change to what it was built from is seen before the next forward.

`_uncached(layer, x)` is the adapter's own fused function on the layer's current tensors (the path
a forward with autograd takes), so every check compares the cached result with a fresh computation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import bone
from bone.layer import BoneLinear
from bone.merging import disabled, merge, unmerge

VARIANTS = [("col", None), ("row", None), ("shard", None), ("mini", 4)]


def _layer(variant="col", mini_r=None, out=32, in_=24, r=8, dtype=torch.float32, bias=True, seed=0, **cfg):
    torch.manual_seed(seed)
    layer = BoneLinear(nn.Linear(in_, out, bias=bias).to(dtype).requires_grad_(False))
    adapter = layer.add_adapter("default", bone.BoneConfig(r=r, variant=variant, mini_r=mini_r, **cfg))
    with torch.no_grad():
        adapter.block.normal_(0, 0.1)
    return layer.eval()


def _uncached(layer, x):
    a = layer.adapter()
    with torch.no_grad():
        return a.fn(x, layer.frozen(), layer.bias, a.block, a.dropout).to(x.dtype)


def _cache(layer, name=None):
    return layer.adapter(name)._cache


def _check(layer, x):
    """A no-grad forward equals the uncached computation and leaves a cache of one (out, in) weight."""
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, _uncached(layer, x), rtol=1e-5, atol=1e-5)
    assert _cache(layer)[1].shape == (layer.out_features, layer.in_features)
    return y


@pytest.mark.parametrize("variant,mini_r", VARIANTS)
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_no_grad_forward_builds_the_weight_once_and_reuses_it(variant, mini_r, mode):
    layer, x = _layer(variant, mini_r), torch.randn(3, 5, 24)
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with ctx():
        y = layer(x)
        weight = _cache(layer)[1]
        y2 = layer(x)
    assert _cache(layer)[1] is weight and torch.equal(y, y2)
    torch.testing.assert_close(y, _uncached(layer, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight, layer.adapter().merged(layer.weight_oi()))  # the effective weight itself


@pytest.mark.parametrize("variant,mini_r", VARIANTS)
def test_an_optimizer_step_between_no_grad_forwards_is_seen(variant, mini_r):
    layer, x = _layer(variant, mini_r), torch.randn(4, 24)
    before = _check(layer, x)
    block = layer.bone_block
    block.grad = torch.randn_like(block)
    torch.optim.AdamW([block], lr=0.1).step()  # in place, no forward in between
    after = _check(layer, x)
    assert not torch.allclose(before, after)


def test_copy_load_and_data_assignment_of_a_new_block_are_seen():
    layer, x = _layer(), torch.randn(4, 24)
    _check(layer, x)
    with torch.no_grad():
        layer.bone_block.copy_(torch.randn_like(layer.bone_block))
    _check(layer, x)
    layer.load_state_dict({**layer.state_dict(), "bone_adapters.default.block": torch.randn_like(layer.bone_block)})
    _check(layer, x)
    layer.bone_block.data = torch.randn_like(layer.bone_block)  # a new storage: a new address
    _check(layer, x)


def test_in_place_writes_to_the_base_weight_are_seen():
    layer, x = _layer(), torch.randn(4, 24)
    _check(layer, x)
    with torch.no_grad():
        layer.weight.mul_(1.5)
    _check(layer, x)


def test_switching_the_active_adapter_uses_its_own_weight_and_drops_the_other():
    layer, x = _layer(), torch.randn(4, 24)
    other = layer.add_adapter("other", bone.BoneConfig(r=8, variant="shard"))
    with torch.no_grad():
        other.block.normal_(0, 0.1)
    y_other = _check(layer, x)  # add_adapter made "other" active
    layer.active = "default"
    y_default = _check(layer, x)
    assert _cache(layer, "other") is None  # one cached weight per layer
    assert not torch.allclose(y_other, y_default)
    layer.active = "other"
    torch.testing.assert_close(_check(layer, x), y_other)
    assert _cache(layer, "default") is None


@pytest.mark.parametrize("variant,mini_r", VARIANTS)
def test_merge_unmerge_and_disabled_never_read_a_stale_weight(make_mlp, variant, mini_r):
    model = bone.apply(make_mlp(d_hidden=48), bone.BoneConfig(r=8, variant=variant, mini_r=mini_r, target_modules=["fc1", "fc2"]))
    for p in bone.trainable_parameters(model):
        with torch.no_grad():
            p.normal_(0, 0.1)
    x = torch.randn(6, 32)
    with torch.no_grad():
        adapted = model(x)
        with disabled(model):
            base = model(x)
        torch.testing.assert_close(model(x), adapted)
        merge(model)
        assert all(layer.adapter()._cache is None for layer in (model.fc1, model.fc2))  # merge wrote W
        torch.testing.assert_close(model(x), adapted, rtol=1e-5, atol=1e-5)
        unmerge(model)
        torch.testing.assert_close(model(x), adapted, rtol=1e-5, atol=1e-5)
        with disabled(model):
            torch.testing.assert_close(model(x), base)
    for layer in (model.fc1, model.fc2):
        _check(layer, torch.randn(2, layer.in_features))


def test_dtype_and_device_moves_drop_the_weight():
    layer, x = _layer(), torch.randn(4, 24)
    _check(layer, x)
    layer.to(torch.float64)
    assert _cache(layer) is None
    y = _check(layer, x.double())
    assert y.dtype == torch.float64 and _cache(layer)[1].dtype == torch.float64


def test_autograd_train_mode_and_drop_cache_release_it():
    """Training never holds the cache: a forward with autograd on drops it, and so does train()."""
    layer, x = _layer(), torch.randn(4, 24)
    _check(layer, x)
    layer(x).sum().backward()  # autograd on: the fused path, no cache
    assert _cache(layer) is None and layer.bone_block.grad is not None
    _check(layer, x)
    layer.train()
    assert _cache(layer) is None
    layer.eval()
    _check(layer, x)
    layer.adapter().drop_cache()
    assert _cache(layer) is None


def test_active_dropout_and_inference_tensors_are_not_cached():
    layer, x = _layer("shard", dropout=0.5), torch.randn(4, 24)
    layer.train()
    with torch.no_grad():
        layer(x)
    assert _cache(layer) is None  # dropout is drawn per call: no fixed effective weight
    layer.eval()
    _check(layer, x)
    with torch.inference_mode():
        made = _layer()
        made(x)
    assert _cache(made) is None  # inference tensors have no version counter to watch


def test_cache_merged_false_rebuilds_every_call():
    layer, x = _layer(cache_merged=False), torch.randn(4, 24)
    with torch.no_grad():
        y = layer(x)
    assert _cache(layer) is None
    torch.testing.assert_close(y, _uncached(layer, x))


def test_mixed_dtypes_cache_in_the_dtype_the_adapter_computes_in():
    """bf16 base, fp32 block: col computes in the block's dtype, shard adds in fp32 (as without the cache)."""
    x = torch.randn(4, 24, dtype=torch.bfloat16)
    for variant in ("col", "shard"):
        layer = _layer(variant, dtype=torch.bfloat16)
        with torch.no_grad():
            y = layer(x)
        assert _cache(layer)[1].dtype == torch.float32 and y.dtype == torch.bfloat16
        torch.testing.assert_close(y, _uncached(layer, x), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("mode,cached", [("auto", False), (True, True)])
def test_quantized_base_is_cached_only_when_asked(mode, cached):
    """"auto" leaves a bitsandbytes base alone (a cached weight would be its dequantized copy, the memory
    quantization saves); True caches the dequantized effective weight and sees a re-quantized base."""
    from bnb_layers import quantized

    layer = BoneLinear(quantized("nf4", 64, 48).requires_grad_(False))
    adapter = layer.add_adapter("default", bone.BoneConfig(r=16, variant="col", cache_merged=mode))
    with torch.no_grad():
        adapter.block.normal_(0, 0.1)
    layer.eval()
    x = torch.randn(3, 48)
    with torch.no_grad():
        y = layer(x)
    assert (_cache(layer) is not None) == cached
    torch.testing.assert_close(y, _uncached(layer, x), rtol=1e-4, atol=1e-4)
    if cached:
        assert _cache(layer)[1].shape == (64, 48) and _cache(layer)[1].dtype == torch.float32
    layer.rebase(nn.Parameter(layer.frozen().dense() * 1.5, requires_grad=False))  # as bone.quant.dequantize does
    _check(layer, x)  # a plain base now: cached under either mode except False, and built from the new weight
