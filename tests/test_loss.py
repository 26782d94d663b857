"""bone.loss: the one next-token cross-entropy (trainer, loss evaluation and RWKV models use it)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from bone.loss import IGNORE, next_token_loss, scored_mask, supervised_tokens


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


def test_scored_logits_give_the_same_loss():
    """Logits of the scored positions only (row-major, as `logits_to_keep=scored_mask(labels)` returns them)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 1, 6], [IGNORE, 2, 2, IGNORE, IGNORE]])
    mask = scored_mask(labels)
    assert mask.tolist() == [[False, True, True, True, False], [True, True, False, False, False]]
    for reduction in ("sum", "mean"):
        torch.testing.assert_close(next_token_loss(logits[mask], labels, reduction, scored=True),
                                   next_token_loss(logits, labels, reduction))


def _scored_vs_full(model, ids, labels):
    """(loss, grads) with logits at the scored positions only, and with every position."""
    results = []
    for keep in (True, False):
        model.zero_grad(set_to_none=True)
        kw = {"logits_to_keep": scored_mask(labels)} if keep else {}
        loss = next_token_loss(model(input_ids=ids, **kw).logits, labels, "sum", scored=keep)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    return results


def test_models_return_scored_logits_with_the_same_loss_and_gradients(make_llama, tmp_path):
    """transformers causal LMs and bone's RWKV take logits_to_keep=<bool mask> (what the trainer passes)."""
    sys.path.insert(0, str(Path(__file__).parent / "models" / "rwkv"))
    from rwkv_testlib import MAKERS

    from bone.models import load_model

    torch.save(MAKERS["x070"](), tmp_path / "tiny.pth")
    for model in (make_llama(), load_model(tmp_path / "tiny.pth")):
        model.train()
        vocab = model.config.vocab_size
        ids = torch.randint(0, vocab, (3, 9), generator=torch.Generator().manual_seed(2))
        labels = ids.clone()
        labels[0, :4] = labels[1, :2] = labels[2, 6:] = IGNORE
        (scored, g_scored), (full, g_full) = _scored_vs_full(model, ids, labels)
        torch.testing.assert_close(scored, full, rtol=1e-6, atol=0)  # bitwise equal here; 1e-6 allows reordering
        assert len(g_scored) == len(g_full) > 0
        for a, b in zip(g_scored, g_full):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
