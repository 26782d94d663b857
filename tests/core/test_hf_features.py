"""Bone layers under Hugging Face gradient checkpointing (non-reentrant) and torch.compile."""
from __future__ import annotations

import pytest
import torch

import bone


def grads_after_step(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.loss.detach(), {n: layer.bone_block.grad.clone() for n, layer in bone.bone_layers(model)}


@pytest.mark.parametrize("variant", ["col", "row", "shard", "mini"])
def test_gradient_checkpointing_gives_the_same_gradients(variant, make_llama, randomize):
    ids = torch.randint(0, 128, (2, 12))
    cfg = bone.BoneConfig(r=16, variant=variant, mini_r=8 if variant == "mini" else None)
    plain = randomize(bone.apply(make_llama(), cfg)).train()
    ckpt = randomize(bone.apply(make_llama(), cfg)).train()
    ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert ckpt.is_gradient_checkpointing
    loss_a, grads_a = grads_after_step(plain, ids)
    loss_b, grads_b = grads_after_step(ckpt, ids)
    torch.testing.assert_close(loss_a, loss_b)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["col", "shard"])
def test_torch_compile_matches_eager(variant, make_mlp, randomize):
    torch._dynamo.reset()
    cfg = bone.BoneConfig(r=8, variant=variant, target_modules=["fc1", "fc2"])
    eager = randomize(bone.apply(make_mlp(), cfg))
    compiled_model = randomize(bone.apply(make_mlp(), cfg))
    compiled = torch.compile(compiled_model, backend="inductor", fullgraph=True)
    x = torch.randn(4, 32)
    y_eager = eager(x)
    y_comp = compiled(x)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-5)
    y_eager.square().sum().backward()
    y_comp.square().sum().backward()
    for (_, a), (_, b) in zip(bone.bone_layers(eager), bone.bone_layers(compiled_model)):
        torch.testing.assert_close(b.bone_block.grad, a.bone_block.grad, rtol=1e-4, atol=1e-5)
