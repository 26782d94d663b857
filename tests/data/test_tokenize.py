"""tokenize_examples (prompt masking, eos, truncation, packing, stats) and collate."""
from __future__ import annotations

import pytest
import torch

from bone.data import IGNORE, Example, arith, collate, encode_prompt, to_examples, tokenize_examples


@pytest.fixture(scope="module")
def examples():
    return to_examples(arith.generate(12))


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_prompt_is_masked_and_response_ends_with_eos(tokenizer, examples, template):
    ds = tokenize_examples(examples, tokenizer, template=template, max_length=512)
    assert len(ds) == 12 and ds.stats["truncated"] == ds.stats["dropped"] == 0
    for ex, row in zip(examples, ds):
        ids, labels = row["input_ids"], row["labels"]
        assert ids.dtype == labels.dtype == torch.long and ids.shape == labels.shape
        prompt = encode_prompt(tokenizer, ex, template)  # exactly what generation is fed
        assert ids[:len(prompt)].tolist() == prompt
        assert (labels[:len(prompt)] == IGNORE).all()
        assert labels[len(prompt):].tolist() == ids[len(prompt):].tolist()
        assert ids[-1].item() == tokenizer.eos_token_id and (ids[len(prompt):] == tokenizer.eos_token_id).sum() == 1
        assert ex.response.strip() in tokenizer.decode(ids[len(prompt):], skip_special_tokens=True)
    sup = sum(int((r["labels"] != IGNORE).sum()) for r in ds)
    assert ds.stats["supervised_tokens"] == sup and ds.stats["tokens"] == sum(len(r["input_ids"]) for r in ds)


def test_truncation_is_counted_and_fully_masked_rows_dropped(tokenizer):
    short = Example("Hi", "1 + 1 = 2\n#### 2")
    long = Example("Hi", " ".join(["7 + 7 = 14"] * 40))
    huge_prompt = Example("word " * 300, "#### 1")
    fits = len(tokenize_examples([short], tokenizer)[0]["input_ids"])  # short fits exactly
    ds = tokenize_examples([short, long, huge_prompt], tokenizer, max_length=fits)
    assert ds.stats == {**ds.stats, "rows": 2, "kept": 2, "truncated": 2, "dropped": 1}
    assert [len(r["input_ids"]) for r in ds] == [fits, fits]
    assert ds[0]["input_ids"][-1] == tokenizer.eos_token_id and ds[1]["input_ids"][-1] != tokenizer.eos_token_id
    with pytest.raises(ValueError, match="raise max_length"):
        tokenize_examples([huge_prompt], tokenizer, max_length=fits)


def test_packing_keeps_every_token_and_mask(tokenizer, examples):
    plain = tokenize_examples(examples, tokenizer, max_length=512)
    packed = tokenize_examples(examples, tokenizer, max_length=400, packing=True)
    stream_ids = torch.cat([r["input_ids"] for r in plain])
    stream_labels = torch.cat([r["labels"] for r in plain])
    assert torch.equal(torch.cat([r["input_ids"] for r in packed]), stream_ids)
    assert torch.equal(torch.cat([r["labels"] for r in packed]), stream_labels)
    assert all(len(r["input_ids"]) == 400 for r in list(packed)[:-1]) and len(packed) < len(plain)
    assert packed.stats["supervised_tokens"] == plain.stats["supervised_tokens"]
    assert packed.stats["truncated"] == 0 and packed.stats["kept"] == 12


def test_bad_arguments(tokenizer, examples):
    with pytest.raises(ValueError, match="unknown template"):
        tokenize_examples(examples, tokenizer, template="llama3")
    with pytest.raises(ValueError, match="max_length"):
        tokenize_examples(examples, tokenizer, max_length=1)
    with pytest.raises(ValueError, match="without a response"):
        tokenize_examples([Example("q", None)], tokenizer)


def test_collate_right_pads(tokenizer, examples):
    ds = tokenize_examples(examples[:3], tokenizer)
    rows = [ds[i] for i in range(3)]
    batch = collate(rows, pad_token_id=tokenizer.pad_token_id)
    width = max(len(r["input_ids"]) for r in rows)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {k: (3, width) for k in ("input_ids", "attention_mask", "labels")}
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        assert torch.equal(batch["input_ids"][i, :n], r["input_ids"]) and torch.equal(batch["labels"][i, :n], r["labels"])
        assert (batch["input_ids"][i, n:] == tokenizer.pad_token_id).all() and (batch["labels"][i, n:] == IGNORE).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (width - n)
    with pytest.raises(ValueError, match="pad_token"):
        collate(rows, pad_token_id=None)
