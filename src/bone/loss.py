"""The training objective: next-token cross-entropy over supervised positions.

Labels are the input ids with `IGNORE` wherever no loss is taken (prompt tokens, padding); the
logits at position t are scored against the label at t + 1. Every loss in bone (the trainer, the
loss/perplexity evaluation, RWKV models' `labels=`) is this one function.

Only the scored positions need logits: `scored_mask(labels)` marks them, a model called with
`logits_to_keep=mask` (Hugging Face causal LMs, bone's RWKV) returns logits for those positions
only, flattened `(N, V)`, and `next_token_loss(logits, labels, scored=True)` scores them against
the same targets: the same loss, without the output head and softmax over prompt and padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100  # label value the loss skips (PyTorch's cross_entropy default ignore_index)


def next_token_loss(logits: Tensor, labels: Tensor, reduction: str = "mean", scored: bool = False) -> Tensor:
    """Cross-entropy of logits[:, t] (B, T, V) against labels[:, t + 1] (B, T), in fp32, skipping
    IGNORE labels. reduction: "mean" over the supervised tokens, or "sum". scored=True: `logits` are
    `(N, V)`, the rows of `scored_mask(labels)` in row-major order (see the module docstring)."""
    if scored:
        targets = labels[:, 1:]
        return F.cross_entropy(logits.float(), targets[targets != IGNORE], reduction=reduction)
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE,
                           reduction=reduction)


def scored_mask(labels: Tensor) -> Tensor:
    """(B, T) bool: the positions t whose logits `next_token_loss` scores (labels[:, t + 1] != IGNORE)."""
    mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def supervised_tokens(labels: Tensor) -> Tensor:
    """How many positions `next_token_loss` scores (labels after the first that are not IGNORE)."""
    return (labels[:, 1:] != IGNORE).sum()
