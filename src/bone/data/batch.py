"""Batch TokenizedDataset rows: right padding, attention mask, -100 labels on padding (training);
left padding of prompts (generation)."""
from __future__ import annotations

import torch

from ..errors import ModelError
from ..loss import IGNORE


def collate(batch: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """[{"input_ids": (T_i,), "labels": (T_i,)}] -> {"input_ids", "attention_mask", "labels"}, each (B, max T_i)."""
    if pad_token_id is None:
        raise ModelError("pad_token_id is None: set tokenizer.pad_token (e.g. to the eos token)")
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = b["input_ids"]
        labels[i, :n] = b["labels"]
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts (lists of ids) -> input_ids (B, T), attention_mask (B, T), padded on the left, so that
    every row's next token is generated at position T."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask
