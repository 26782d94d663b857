"""Flash-Bone inside a transformers model with HF gradient checkpointing (non-reentrant)."""
from __future__ import annotations

import pytest
import torch

import bone


def _grads(variant: str, checkpointing: bool, dropout: float):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=4, vocab_size=64, max_position_embeddings=32))
    bone.apply(model, bone.BoneConfig(r=8, variant=variant, dropout=dropout))
    calls = []
    for _, layer in bone.bone_layers(model):
        torch.nn.init.normal_(layer.bone_block, std=0.05)
        layer.register_forward_hook(lambda *a: calls.append(1))
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    model(input_ids=ids, labels=ids).loss.backward()
    # checkpointing re-runs adapted layers in backward (torch stops a recompute early once it has what it needs)
    assert len(calls) > 14 if checkpointing else len(calls) == 14
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("variant,dropout", [("col", 0.0), ("row", 0.0), ("shard", 0.2)])
def test_checkpointing_gives_the_same_gradients(variant, dropout):
    plain, ckpt = _grads(variant, False, dropout), _grads(variant, True, dropout)
    assert plain.keys() == ckpt.keys() and len(plain) == 2 * 7
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6)
