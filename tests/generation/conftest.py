"""Tiny models for the generation tests: the tiny BPE tokenizer (ChatML template, vocab 1000), a
tiny random Llama and tiny random RWKV-7 / RWKV-6 checkpoints sized to that vocabulary."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "rwkv"))
from rwkv_testlib import MAKERS  # noqa: E402  (tiny BlinkDL-layout checkpoints)


@pytest.fixture(scope="session")
def plain_tokenizer(tokenizer):
    """The tiny tokenizer without a chat template (like RWKV's World tokenizer)."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


@pytest.fixture(scope="session")
def _llama_state(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    return cfg, copy.deepcopy(LlamaForCausalLM(cfg).state_dict())


def _llama(state):
    from transformers import LlamaForCausalLM

    cfg, weights = state
    model = LlamaForCausalLM(cfg)
    model.load_state_dict(weights)
    return model.eval()


def _rwkv(tmp_path, version, vocab):
    from bone.models.rwkv import load_rwkv

    path = tmp_path / f"tiny-{version}.pth"
    torch.save(MAKERS[version](vocab=vocab), path)
    return load_rwkv(path, chunk_size=8).eval()


@pytest.fixture
def llama(_llama_state):
    """A fresh tiny Llama (hidden 64, 2 layers) over the tiny tokenizer's vocabulary, in eval mode."""
    return _llama(_llama_state)


@pytest.fixture(params=["x070", "x060"])
def rwkv(request, tmp_path, tokenizer):
    """A tiny random RWKV (2 layers, C=128) over the tiny tokenizer's vocabulary."""
    return _rwkv(tmp_path, request.param, len(tokenizer))


@pytest.fixture(params=["llama", "x070", "x060"])
def model(request, tmp_path, tokenizer, _llama_state):
    """Each family in turn: the tiny Llama, then the tiny RWKV-7 and RWKV-6."""
    if request.param == "llama":
        return _llama(_llama_state)
    return _rwkv(tmp_path, request.param, len(tokenizer))


class FedTokens:
    """Counts the tokens each forward call of a model reads (a forward pre-hook on the real model)."""

    def __init__(self, model):
        self.calls: list[int] = []
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls.append(int(ids.numel()))

    def take(self) -> int:
        """Tokens read since the last take()."""
        n, self.calls = sum(self.calls), []
        return n


@pytest.fixture
def fed():
    return FedTokens
