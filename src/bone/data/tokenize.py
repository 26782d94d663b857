"""Tokenize examples into (input_ids, labels) rows with the prompt masked from the loss.

A row is prompt ids + response ids + eos; labels equal input_ids on the response and eos and are
-100 on the prompt. The prompt is tokenized on its own (exactly as generation is fed it, see
`encode_prompt`), so the mask boundary is exact.

Tokenizer interface used: `encode(text, add_special_tokens=bool) -> list[int]`, `eos_token_id`,
and for template="chat" `apply_chat_template` (Hugging Face tokenizers have all of these).
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError, ModelError
from ..loss import IGNORE
from .templates import Example, check_template, render_prompt, render_response


def encode_prompt(tokenizer, example: Example, template: str) -> list[int]:
    """Prompt token ids; alpaca adds the tokenizer's own special tokens (e.g. BOS), chat's template
    text already contains them."""
    text = render_prompt(example, tokenizer, template)
    return list(tokenizer.encode(text, add_special_tokens=(template == "alpaca")))


class TokenizedDataset(Dataset):
    """Rows {"input_ids": LongTensor(T), "labels": LongTensor(T)}, T <= max_length.

    stats: rows (dataset rows), kept (examples used), truncated (examples cut to max_length),
    dropped (examples with no response token left after truncation), tokens (all ids),
    supervised_tokens (labels != -100)."""

    def __init__(self, rows: list[tuple[list[int], list[int]]], stats: dict):
        self.rows = rows
        self.stats = stats

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids, labels = self.rows[i]
        return {"input_ids": torch.tensor(ids, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long)}


def _encode_example(tokenizer, ex: Example, template: str) -> tuple[list[int], list[int]]:
    if ex.response is None and ex.messages is None:
        raise DataError("an example without a response cannot be used for training or loss evaluation")
    prompt = encode_prompt(tokenizer, ex, template)
    text, add_eos = render_response(ex, tokenizer, template)
    response = list(tokenizer.encode(text, add_special_tokens=False))
    if add_eos:
        response.append(tokenizer.eos_token_id)
    return prompt + response, [IGNORE] * len(prompt) + response


def _pack(encoded, max_length: int) -> list[tuple[list[int], list[int]]]:
    """Concatenate examples into one stream and cut it into rows of max_length (last row shorter).
    Rows attend across example boundaries (plain packing); each example ends with eos."""
    ids = [t for e, _ in encoded for t in e]
    labels = [t for _, lab in encoded for t in lab]
    return [(ids[i:i + max_length], labels[i:i + max_length]) for i in range(0, len(ids), max_length)]


def tokenize_examples(examples, tokenizer, *, template: str = "alpaca", max_length: int = 512,
                      packing: bool = False) -> TokenizedDataset:
    """Tokenize `examples` (list[Example]) into a TokenizedDataset (see its docstring for stats)."""
    check_template(template)
    if max_length < 2:
        raise ConfigError(f"max_length must be at least 2 tokens, got {max_length}")
    if tokenizer.eos_token_id is None:
        raise ModelError("the tokenizer has no eos token; set tokenizer.eos_token before tokenizing")
    encoded, truncated, dropped = [], 0, 0
    for ex in examples:
        ids, labels = _encode_example(tokenizer, ex, template)
        if not packing and len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
            if all(t == IGNORE for t in labels):
                dropped += 1
                continue
        encoded.append((ids, labels))
    rows = _pack(encoded, max_length) if packing else encoded
    stats = {
        "rows": len(rows),
        "kept": len(encoded),
        "truncated": truncated,
        "dropped": dropped,
        "tokens": sum(len(i) for i, _ in rows),
        "supervised_tokens": sum(sum(t != IGNORE for t in lab) for _, lab in rows),
    }
    if not rows:
        raise DataError(f"no example fits max_length={max_length}: every prompt fills it; raise max_length")
    return TokenizedDataset(rows, stats)
