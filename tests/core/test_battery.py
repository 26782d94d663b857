"""Table-driven battery: variants x layer kinds (Linear, Conv1D, tiny Llama) x dtypes x fused/reference."""
from __future__ import annotations

import itertools

import pytest
import torch

import bone
import bone.bases
import bone.inject

VARIANTS = ["col", "row", "shard", "mini"]
KINDS = ["linear", "conv1d", "llama"]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# (forward vs merged, unmerge restores) tolerances per base dtype; documented in the README.
TOL = {torch.float32: 1e-5, torch.bfloat16: 6e-2, torch.float16: 8e-3}


def cfg_for(variant, kind, **kw):
    r = 16 if kind == "llama" else 8
    targets = None if kind == "llama" else ["fc1", "fc2"]
    return bone.BoneConfig(r=r, variant=variant, mini_r=8 if variant == "mini" else None, target_modules=targets, **kw)


@pytest.fixture
def build(make_llama, make_mlp):
    def _build(kind, dtype):
        torch.manual_seed(5)
        if kind == "llama":
            return make_llama(dtype), torch.randint(0, 128, (2, 9))
        return make_mlp(kind, dtype), torch.randn(3, 5, 32).to(dtype)

    return _build


def run(model, inp):
    out = model(input_ids=inp) if not inp.is_floating_point() else model(inp)
    return (out.logits if hasattr(out, "logits") else out).float()


def expected_trainable(model_before, cfg):
    total = 0
    names = bone.inject.resolve_targets(model_before, cfg)
    for name in names:
        out, in_ = bone.bases.shape_of(model_before.get_submodule(name))
        total += {"col": cfg.r * out, "shard": cfg.r * out, "row": cfg.r * in_, "mini": cfg.r * (cfg.mini_r or 0)}[cfg.variant]
    return total


CASES = list(itertools.product(VARIANTS, KINDS, DTYPES))


@pytest.mark.parametrize("variant,kind,dtype", CASES)
def test_lifecycle(variant, kind, dtype, build, randomize, tmp_path):
    model, inp = build(kind, dtype)
    base_out = run(model, inp)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = cfg_for(variant, kind)
    n_expected = expected_trainable(model, cfg)
    bone.apply(model, cfg)

    # identity at init, only the blocks are trainable, with the documented count
    torch.testing.assert_close(run(model, inp), base_out, rtol=0, atol=0 if dtype == torch.float32 else TOL[dtype])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".bone_adapters.default.block") for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == n_expected

    randomize(model, std=0.05 if dtype == torch.float32 else 0.02)
    adapted = run(model, inp)
    assert (adapted - base_out).abs().max() > 1e-3  # the adapter changes the output

    with bone.disabled(model):
        torch.testing.assert_close(run(model, inp), base_out, rtol=0, atol=TOL[dtype])

    bone.merge(model)
    merged = run(model, inp)
    torch.testing.assert_close(merged, adapted, rtol=TOL[dtype], atol=TOL[dtype])
    bone.merge(model)  # twice is a no-op
    torch.testing.assert_close(run(model, inp), merged, rtol=0, atol=0)

    bone.unmerge(model)
    for name, layer in bone.bone_layers(model):
        ref = base_state[f"{name}.weight"].float()
        got = layer.weight.float()
        torch.testing.assert_close(got, ref, rtol=TOL[dtype], atol=TOL[dtype] * ref.abs().max().item())

    # save / load round trip into a fresh base model
    bone.save(model, tmp_path / "adapter")
    fresh, _ = build(kind, dtype)
    bone.load(fresh, tmp_path / "adapter")
    for (_, a), (_, b) in zip(bone.bone_layers(fresh), bone.bone_layers(model)):
        assert torch.equal(a.bone_block, b.bone_block)
    torch.testing.assert_close(run(fresh, inp), adapted, rtol=0, atol=0)


@pytest.mark.parametrize("variant,kind", list(itertools.product(VARIANTS, KINDS)))
@pytest.mark.parametrize("fused", [True, False])
def test_training_touches_only_blocks_and_zero_init_gets_gradients(variant, kind, fused, build):
    model, inp = build(kind, torch.float32)
    model.train()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    bone.apply(model, cfg_for(variant, kind, fused=fused))
    run(model, inp).square().mean().backward()
    for name, layer in bone.bone_layers(model):
        assert layer.bone_block.grad is not None and layer.bone_block.grad.abs().sum() > 0, name
    opt = torch.optim.AdamW(bone.trainable_parameters(model), lr=1e-2)
    for _ in range(3):
        opt.step()
        opt.zero_grad()
        run(model, inp).square().mean().backward()
    state = model.state_dict()
    for key, value in frozen.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert all(layer.bone_block.abs().sum() > 0 for _, layer in bone.bone_layers(model))


@pytest.mark.parametrize("variant", VARIANTS)
def test_fused_and_reference_agree_inside_a_model(variant, build, randomize):
    model, inp = build("llama", torch.float32)
    ref, _ = build("llama", torch.float32)
    bone.apply(model, cfg_for(variant, "llama", fused=True))
    bone.apply(ref, cfg_for(variant, "llama", fused=False))
    randomize(model)
    randomize(ref)
    torch.testing.assert_close(run(model, inp), run(ref, inp), rtol=1e-5, atol=1e-5)


def test_adapter_dtype_is_user_controlled(build):
    model, inp = build("llama", torch.bfloat16)
    bone.apply(model, bone.BoneConfig(r=16, variant="col", dtype="float32"))
    assert {layer.bone_block.dtype for _, layer in bone.bone_layers(model)} == {torch.float32}
    assert run(model, inp).isfinite().all()
    model2, _ = build("llama", torch.bfloat16)
    bone.apply(model2, bone.BoneConfig(r=16, variant="shard", dtype=None))
    assert {layer.bone_block.dtype for _, layer in bone.bone_layers(model2)} == {torch.bfloat16}
    out = model2(input_ids=inp).logits
    assert out.dtype == torch.bfloat16


def test_biases_untouched_by_merge(make_mlp, randomize):
    model = make_mlp("linear")
    biases = {n: m.bias.clone() for n, m in model.named_children() if hasattr(m, "bias") and m.bias is not None}
    bone.apply(model, bone.BoneConfig(r=8, variant="col", target_modules=["fc1", "fc2"]))
    randomize(model)
    bone.merge(model)
    for name, bias in biases.items():
        torch.testing.assert_close(model.get_submodule(name).bias, bias, rtol=0, atol=0)


def test_unload_gives_plain_layers_with_merged_weights(build, randomize):
    model, inp = build("conv1d", torch.float32)
    bone.apply(model, cfg_for("col", "conv1d"))
    randomize(model)
    adapted = run(model, inp)
    bone.merge(model)
    bone.unload(model)
    assert not list(bone.bone_layers(model))
    assert type(model.fc1).__name__ == "Conv1D"
    torch.testing.assert_close(run(model, inp), adapted, rtol=1e-5, atol=1e-5)
