"""eval_data: the records' fields named once serve both metrics (bone eval --prompt-field, and the
trainer's data.prompt_field for its held-out evaluation)."""
from __future__ import annotations

import pytest
import torch

from bone.data import arith
from bone.errors import DataError
from bone.eval.run import eval_data


def _renamed(records):
    return [{"q": r["question"], "a": r["answer"]} for r in records]


def test_accuracy_reads_the_named_fields(tokenizer):
    records = arith.generate(4, seed=3)
    auto = eval_data(records, tokenizer, metric="accuracy", template="alpaca")
    named = eval_data(_renamed(records), tokenizer, metric="accuracy", template="alpaca",
                      fields={"prompt_field": "q", "response_field": "a"})
    assert named == auto and [e.prompt for e in named] == [r["question"] for r in records]


def test_loss_reads_the_named_fields(tokenizer):
    records = arith.generate(4, seed=3)
    auto = eval_data(records, tokenizer, metric="loss", template="alpaca")
    named = eval_data(_renamed(records), tokenizer, metric="loss", template="alpaca",
                      fields={"prompt_field": "q", "response_field": "a"})
    assert len(named) == len(auto) == 4
    for a, b in zip(named, auto):
        assert a.keys() == b.keys() and all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)


@pytest.mark.parametrize("metric", ["accuracy", "loss"])
def test_unknown_fields_without_names_are_refused(tokenizer, metric):
    with pytest.raises(DataError, match="cannot tell the prompt and response fields"):
        eval_data(_renamed(arith.generate(2, seed=3)), tokenizer, metric=metric, template="alpaca")
