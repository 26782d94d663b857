"""Eval fixtures: a small random Llama sized to the shared tiny tokenizer (tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture
def tiny_llama(tokenizer):
    """make(seed) -> a small random LlamaForCausalLM sized to the tiny tokenizer (fp32, eval mode)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(seed: int = 0):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        return LlamaForCausalLM(cfg).eval()

    return make
