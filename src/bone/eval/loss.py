"""Mean token loss and perplexity of a model on a TokenizedDataset (response tokens only)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import DataError
from ..data.collate import collate
from ..data.tokenize import IGNORE


@torch.no_grad()
def loss_eval(model, dataset, *, batch_size: int = 8) -> dict:
    """{"loss": mean cross-entropy over supervised tokens (nats), "perplexity": exp(loss), "tokens": count}.

    Rows are right-padded, so a causal model's outputs at real positions do not see the padding;
    the model is called as model(input_ids=(B, T)) -> .logits (B, T, V), shifted by one."""
    if len(dataset) == 0:
        raise DataError("loss_eval got an empty dataset")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))], 0)
            logits = model(input_ids=batch["input_ids"].to(device)).logits[:, :-1].float()
            labels = batch["labels"][:, 1:].to(device)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                     ignore_index=IGNORE, reduction="sum").item()
            count += int((labels != IGNORE).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise DataError("the dataset has no supervised tokens (all labels are -100)")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}
