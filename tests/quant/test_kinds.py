"""bone.apply / load / unload / merge on bitsandbytes layers (bone.quant.kinds): the base stays quantized
and frozen, only the blocks train, merging refuses, unusable layers are named before anything changes."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import bone
from bnb_layers import bnb, dequantized, quantized
from bone.errors import ModelError
from bone.quant import packing


class Net(nn.Module):
    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        self.fc1, self.act, self.fc2 = first, nn.GELU(), second
        self.config = None

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def net(spec, in_=128, hidden=192):
    return Net(quantized(spec, hidden, in_, seed=1), quantized(spec, in_, hidden, seed=2))


def reference_net(model):
    """The same network with plain layers holding the dequantized weights (computed without bone)."""
    layers = []
    for q in (model.fc1, model.fc2):
        lin = nn.Linear(q.in_features, q.out_features)
        lin.weight.data, lin.bias.data = dequantized(q), q.bias.detach().float().clone()
        layers.append(lin)
    return Net(*layers)


@pytest.mark.parametrize("spec", ["nf4-dq", "fp4", "int8"])
@pytest.mark.parametrize("variant", ["col", "shard"])
def test_adapted_quantized_base_trains_like_its_dequantized_twin(spec, variant):
    model = net(spec).train()
    twin = reference_net(model).train()
    cfg = bone.BoneConfig(r=16, variant=variant, target_modules=["fc1", "fc2"])
    weights = {n: m.weight for n, m in model.named_modules() if n in ("fc1", "fc2")}
    bone.apply(model, cfg)
    bone.apply(twin, cfg)
    for name, w in weights.items():  # the base stays quantized, frozen and the same Parameter
        layer = model.get_submodule(name)
        assert layer.weight is w and layer.quantized and not w.requires_grad and not w.is_floating_point()
    assert [p.shape for p in bone.trainable_parameters(model)] == [p.shape for p in bone.trainable_parameters(twin)]
    x = torch.randn(4, 6, 128, generator=torch.Generator().manual_seed(3))
    opts = [torch.optim.AdamW(bone.trainable_parameters(m), lr=1e-2) for m in (model, twin)]
    for _ in range(3):
        for m, opt in zip((model, twin), opts):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    for (_, a), (_, b) in zip(bone.bone_layers(model), bone.bone_layers(twin)):
        torch.testing.assert_close(a.bone_block, b.bone_block, rtol=1e-4, atol=1e-6)
    assert bone.trainable_parameters(model)[0].abs().max() > 0
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin(x), rtol=1e-4, atol=1e-5)
        with bone.disabled(model), bone.disabled(twin):  # the base alone, through bone's base product
            torch.testing.assert_close(model(x), twin(x), rtol=1e-5, atol=1e-5)


def test_merge_refuses_and_dequantize_then_merge_matches():
    model = net("nf4-dq").train()
    bone.apply(model, bone.BoneConfig(r=16, variant="col", target_modules=["fc1", "fc2"]))
    with torch.no_grad():
        for _, layer in bone.bone_layers(model):
            layer.bone_block.normal_(0, 0.05)
    x = torch.randn(3, 128)
    with torch.no_grad():
        want = model(x)
    w = model.fc1.weight
    with pytest.raises(ModelError, match=r"quantized base .*fc1.*does not requantize.*full-precision.*bone.quant.dequantize"):
        bone.merge(model)
    assert model.fc1.weight is w and not model.fc1.merged  # nothing changed
    bone.quant.dequantize(model)
    assert not bone.quant.is_quantized(model) and model.fc1.weight.dtype == torch.float32
    bone.merge(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def test_unload_gives_the_bitsandbytes_layer_back():
    model = net("int8")
    first = model.fc1
    bone.apply(model, bone.BoneConfig(r=16, target_modules=["fc1"]))
    bone.unload(model)
    assert model.fc1 is first and model.fc1.weight.dtype == torch.int8
    x = torch.randn(2, 128)
    torch.testing.assert_close(model.train()(x), reference_net(model).train()(x), rtol=1e-5, atol=1e-5)


def test_apply_keeps_bitsandbytes_from_repacking():
    """After bone.apply no 4-bit layer of the model (adapted or not) is repacked by an eval forward, so
    eval -> train keeps working; the unadapted layer's own training path included."""
    model = net("nf4-dq")
    bone.apply(model, bone.BoneConfig(r=16, target_modules=["fc1"]))
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 128))
    assert not packing.is_repacked(model.fc2.weight) and not packing.is_repacked(model.fc1.weight)
    x = torch.randn(2, 128, requires_grad=True)
    model.train()(x).sum().backward()
    assert x.grad is not None and model.fc1.bone_block.grad is not None


def test_ragged_in_features_warn_and_stay_exact():
    model = Net(quantized("nf4", 64, 96), quantized("nf4", 32, 160))
    twin = reference_net(model)
    with pytest.warns(UserWarning) as record:
        bone.apply(model, bone.BoneConfig(r=16, variant="shard", target_modules=["fc1"]))
    text = str(record[0].message)
    assert "fc1: in_features=96 is not a multiple of the 4-bit blocksize 64" in text and "own exact dequantization" in text
    assert "fc2: in_features=160" in text and "keep it in full precision" in text
    x = torch.randn(2, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.fc1(x), twin.fc1(x), rtol=1e-5, atol=1e-5)


def test_unusable_bitsandbytes_layers_are_named_before_any_change():
    b = bnb()
    cases = [
        (b.nn.Linear4bit(64, 32, quant_type="nf4"), r"fc1 \(Linear4bit\): its weight is not quantized yet"),
        (b.nn.Linear8bitLt(64, 32, has_fp16_weights=True), r"fc1 \(Linear8bitLt\): it keeps torch.float32 weights"),
    ]
    for first, match in cases:
        model = Net(first, quantized("nf4", 64, 32))
        with pytest.raises(ModelError, match=match):
            bone.apply(model, bone.BoneConfig(r=16, target_modules=["fc1", "fc2"]))
        assert type(model.fc1) is type(first) and type(model.fc2) is b.nn.Linear4bit
    model = Net(quantized("nf4", 32, 64), nn.Linear(32, 64))
    qs = model.fc1.weight.quant_state
    qs.shape = torch.Size((64, 32))  # quantized from the transposed weight, as some tools do
    with pytest.raises(ModelError, match=r"fc1 \(Linear4bit\): its quantization state describes a \(64, 32\) weight"):
        bone.apply(model, bone.BoneConfig(r=16, target_modules=["fc1"]))


def test_integer_weight_of_an_unknown_tool_is_refused():
    model = Net(nn.Linear(32, 64), nn.Linear(64, 32))
    model.fc1.weight = nn.Parameter(torch.zeros(64, 32, dtype=torch.int8), requires_grad=False)
    with pytest.raises(ModelError, match=r"fc1 \(Linear\): its weight is torch.int8.*a tool bone cannot read"):
        bone.apply(model, bone.BoneConfig(r=16, target_modules=["fc1"]))


def test_saved_adapter_loads_on_quantized_and_full_precision_bases(tmp_path):
    model = net("nf4-dq")
    bone.apply(model, bone.BoneConfig(r=16, variant="col", target_modules=["fc1", "fc2"]))
    with torch.no_grad():
        for _, layer in bone.bone_layers(model):
            layer.bone_block.normal_(0, 0.05)
    bone.save(model, tmp_path)
    x = torch.randn(2, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say for these shapes
        again = bone.load(net("nf4-dq"), tmp_path)
    twin = bone.load(reference_net(net("nf4-dq")), tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(twin(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("first", ["bone.quant.kinds", "bone.quant.rows", "bone.bases"])
def test_modules_import_in_any_order(first):
    """bone.quant.kinds subclasses bases.BaseKind and bases lists the quantized kinds: either imports first."""
    import subprocess
    import sys

    code = f"import {first}, bone.bases as b; from torch import nn; print(type(b.kind_of(nn.Linear(2, 2))).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "LinearKind"
