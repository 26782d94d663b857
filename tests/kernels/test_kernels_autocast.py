"""Flash-Bone under autocast (bf16 mixed precision, as `bone train` precision=bf16, Trainer bf16=True):
forward and backward run for every variant, and the gradients are as close to the fp32 ones as
the plain autograd reference's under the same autocast."""
from __future__ import annotations

import pytest
import torch

import bone

CASES = [("col", 0.0), ("row", 0.0), ("shard", 0.0), ("shard", 0.1), ("mini", 0.0)]


def _grads(variant: str, dropout: float, fused: bool, autocast: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=4, vocab_size=128, max_position_embeddings=32))
    cfg = bone.BoneConfig(r=16, variant=variant, dropout=dropout, mini_r=8 if variant == "mini" else None, fused=fused)
    bone.apply(model, cfg).train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in bone.bone_layers(model):
            layer.bone_block.copy_(torch.randn(layer.bone_block.shape, generator=g) * 0.05)
    ids = torch.randint(0, 128, (2, 12), generator=g)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), [layer.bone_block.grad for _, layer in bone.bone_layers(model)]


def _error(got, truth) -> float:
    return max(((a - b).norm() / b.norm()).item() for a, b in zip(got[1], truth[1]))


@pytest.mark.parametrize("variant,dropout", CASES)
def test_fused_under_autocast_is_as_accurate_as_the_reference(variant, dropout):
    truth = _grads(variant, dropout, fused=True, autocast=False)
    fused, ref = _grads(variant, dropout, True, True), _grads(variant, dropout, False, True)
    assert all(g.dtype == torch.float32 for g in fused[1])
    assert _error(fused, truth) < 1.5 * _error(ref, truth) + 1e-3
    assert abs(fused[0] - truth[0]) < 1.5 * abs(ref[0] - truth[0]) + 1e-3
