"""bone.loss: the one next-token cross-entropy (trainer, loss evaluation and RWKV models use it)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from bone.loss import IGNORE, next_token_loss, supervised_tokens


def test_next_token_loss_scores_each_position_against_the_next_label():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.bfloat16)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 1, 6], [IGNORE, 2, 2, IGNORE, IGNORE]])
    by_hand, count = 0.0, 0
    for b in range(2):
        for t in range(4):
            target = int(labels[b, t + 1])
            if target != IGNORE:
                by_hand -= torch.log_softmax(logits[b, t].float(), -1)[target].item()
                count += 1
    total = next_token_loss(logits, labels, "sum")
    assert total.dtype == torch.float32 and math.isclose(total.item(), by_hand, rel_tol=1e-5)
    assert int(supervised_tokens(labels)) == count == 5  # the first label is never a target
    assert math.isclose(next_token_loss(logits, labels).item(), by_hand / count, rel_tol=1e-5)


def test_rwkv_models_report_the_same_loss(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "models" / "rwkv"))
    from rwkv_testlib import MAKERS  # tiny BlinkDL-layout checkpoints

    from bone.models import load_model

    torch.save(MAKERS["x070"](), tmp_path / "tiny.pth")
    model = load_model(tmp_path / "tiny.pth").eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :2] = IGNORE
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    assert torch.equal(out.loss, next_token_loss(out.logits, labels))
