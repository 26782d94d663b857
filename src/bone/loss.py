"""The training objective: next-token cross-entropy over supervised positions.

Labels are the input ids with `IGNORE` wherever no loss is taken (prompt tokens, padding); the
logits at position t are scored against the label at t + 1. Every loss in bone (the trainer, the
loss/perplexity evaluation, RWKV models' `labels=`) is this one function.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

IGNORE = -100  # label value the loss skips (PyTorch's cross_entropy default ignore_index)


def next_token_loss(logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of logits[:, t] (B, T, V) against labels[:, t + 1] (B, T), in fp32, skipping
    IGNORE labels. reduction: "mean" over the supervised tokens, or "sum"."""
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE,
                           reduction=reduction)


def supervised_tokens(labels: Tensor) -> Tensor:
    """How many positions `next_token_loss` scores (labels after the first that are not IGNORE)."""
    return (labels[:, 1:] != IGNORE).sum()
