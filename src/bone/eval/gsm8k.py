"""GSM8K-style accuracy: greedy, batched generation with left padding, then final-number matching."""
from __future__ import annotations

import torch

from ..errors import DataError
from ..data.batch import left_pad
from ..data.templates import Example, to_examples
from ..data.tokenize import encode_prompt
from .answers import answers_match, extract_answer

STOP_MARKERS = ("### Instruction",)  # text after these is a new, self-invented task: cut it off


def _cut(text: str) -> str:
    for marker in STOP_MARKERS:
        text = text.split(marker, 1)[0]
    return text.strip()


def _examples(records) -> list[Example]:
    records = list(records)
    if records and all(isinstance(r, Example) for r in records):
        return records
    return to_examples(records)


def _question(ex: Example) -> str:
    if ex.messages is None:
        return ex.prompt
    return next(m["content"] for m in reversed(ex.messages) if m["role"] == "user")


def _gold_text(ex: Example) -> str | None:
    return ex.messages[-1]["content"] if ex.messages is not None else ex.response


@torch.no_grad()
def gsm8k_eval(model, tokenizer, records, *, template: str = "alpaca", batch_size: int = 8,
               max_new_tokens: int = 256) -> tuple[dict, list[dict]]:
    """Greedy-decode an answer for every record and compare its final number with the gold one.

    records: dicts (fields auto-detected as in to_examples, e.g. question/answer with "#### N") or
    Examples. The prompt is built exactly as in training (template, special tokens).
    Returns ({"accuracy", "correct", "n"}, [{"question", "gold", "prediction", "output", "correct"}])."""
    examples = _examples(records)
    golds = []
    for i, ex in enumerate(examples):
        gold = extract_answer(_gold_text(ex))
        if gold is None:
            raise DataError(f"record {i}: the reference answer has no final number (expected e.g. '#### 42')")
        golds.append(gold)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    device = next(model.parameters()).device
    prompts = [encode_prompt(tokenizer, ex, template) for ex in examples]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    outputs: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = left_pad([prompts[i] for i in idx], pad)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=pad, eos_token_id=eos)
            for row, i in zip(out[:, ids.shape[1]:].tolist(), idx):
                if eos in row:
                    row = row[:row.index(eos)]
                outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    predictions = []
    for ex, gold, text in zip(examples, golds, outputs):
        pred = extract_answer(_cut(text))
        predictions.append({"question": _question(ex), "gold": gold, "prediction": pred, "output": text,
                            "correct": answers_match(pred, gold)})
    correct = sum(p["correct"] for p in predictions)
    n = len(predictions)
    return {"accuracy": correct / n if n else 0.0, "correct": correct, "n": n}, predictions
