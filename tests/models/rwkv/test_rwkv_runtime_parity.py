"""Logits of this project's RWKV model against the official `rwkv` runtime (0.8.x, cpu fp32).

The runtime runs in a subprocess (RWKV-7 needs RWKV_V7_ON=1 before rwkv.model is imported)."""
import pytest
import torch

from bone.models.rwkv import load_rwkv
from rwkv_testlib import VOCAB, official_logits

pytestmark = pytest.mark.integration


def test_logits_match_the_official_runtime_at_every_position(tiny_pth, version):
    tokens = torch.randint(0, VOCAB, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    ref = official_logits(tiny_pth, tokens, version)
    model = load_rwkv(tiny_pth, chunk_size=16)  # 40 tokens: three chunks chained through the state
    with torch.no_grad():
        ours = model(input_ids=torch.tensor([tokens])).logits[0]
    assert ours.shape == ref.shape == (40, VOCAB)
    assert (ours - ref).abs().max() <= 1e-4
