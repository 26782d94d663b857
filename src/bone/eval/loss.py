"""Mean token loss and perplexity of a model on a TokenizedDataset (response tokens only)."""
from __future__ import annotations

import math

import torch

from ..data.batch import collate
from ..errors import DataError
from ..loss import next_token_loss, supervised_tokens


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
            labels = batch["labels"].to(device)
            total += next_token_loss(model(input_ids=batch["input_ids"].to(device)).logits, labels, "sum").item()
            count += int(supervised_tokens(labels))
    finally:
        model.train(was_training)
    if count == 0:
        raise DataError("the dataset has no supervised tokens (all labels are -100)")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}
