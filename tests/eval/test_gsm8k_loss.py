"""gsm8k_eval (greedy, batched, left-padded generation), loss_eval and write_results on tiny real models."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bone.data import arith, collate, to_examples, tokenize_examples
from bone.eval import gsm8k_eval, loss_eval, write_results


def _memorize(model, dataset, pad_id, max_steps=200, target=0.02):
    """Overfit the model on the dataset (full batch, Adam) until the loss is below `target`."""
    batch = collate([dataset[i] for i in range(len(dataset))], pad_id)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(max_steps):
        loss = model(**batch).loss
        if loss.item() < target:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), loss.item()


@pytest.fixture(scope="module")
def records():
    return arith.generate(5, seed=7)


def test_trained_model_scores_full_marks_through_the_same_prompt(tokenizer, tiny_llama, records):
    ds = tokenize_examples(to_examples(records), tokenizer, template="alpaca")
    model, final_loss = _memorize(tiny_llama(), ds, tokenizer.pad_token_id)
    assert final_loss < 0.02
    metrics, preds = gsm8k_eval(model, tokenizer, records, batch_size=2, max_new_tokens=40)
    assert metrics == {"accuracy": 1.0, "correct": 5, "n": 5}
    for r, p in zip(records, preds):  # predictions keep the input order although batches are length-sorted
        assert p["question"] == r["question"] and p["output"] == r["answer"] and p["correct"]
    wrong = [{"question": r["question"], "answer": "#### 1000"} for r in records]
    metrics, preds = gsm8k_eval(model, tokenizer, wrong, batch_size=5, max_new_tokens=40)
    assert metrics["correct"] == 0 and all(p["gold"] == "1000" for p in preds)


def test_left_padded_batches_equal_one_by_one(tokenizer, tiny_llama):
    model = tiny_llama(seed=1).double()
    records = arith.generate(6, seed=2)  # prompts of different lengths
    _, single = gsm8k_eval(model, tokenizer, records, batch_size=1, max_new_tokens=12)
    _, batched = gsm8k_eval(model, tokenizer, records, batch_size=6, max_new_tokens=12)
    assert [p["output"] for p in single] == [p["output"] for p in batched]
    assert len({p["output"] for p in single}) > 1  # the prompts really differ in what they produce


def test_chat_template_eval_runs(tokenizer, tiny_llama):
    records = [{"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "#### 4"}]}]
    metrics, preds = gsm8k_eval(tiny_llama(), tokenizer, records, template="chat", max_new_tokens=4)
    assert metrics["n"] == 1 and preds[0]["gold"] == "4" and preds[0]["question"] == "What is 2 + 2?"


def test_gold_without_number_is_refused(tokenizer, tiny_llama):
    with pytest.raises(ValueError, match="record 1: the reference answer has no final number"):
        gsm8k_eval(tiny_llama(), tokenizer, [{"question": "a", "answer": "#### 3"}, {"question": "b", "answer": "none"}])


def test_loss_eval_matches_the_model_loss_and_ignores_padding(tokenizer, tiny_llama):
    model = tiny_llama()
    ds = tokenize_examples(to_examples(arith.generate(5)), tokenizer)
    per_row = []
    for i in range(len(ds)):
        out = model(input_ids=ds[i]["input_ids"][None], labels=ds[i]["labels"][None])
        per_row.append((out.loss.item(), int((ds[i]["labels"][1:] != -100).sum())))
    tokens = sum(n for _, n in per_row)
    expected = sum(loss * n for loss, n in per_row) / tokens
    for bs in (1, 2, 5):
        got = loss_eval(model, ds, batch_size=bs)
        assert got["tokens"] == tokens
        assert got["loss"] == pytest.approx(expected, rel=1e-5)
        assert got["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)


def test_loss_drops_after_training(tokenizer, tiny_llama):
    ds = tokenize_examples(to_examples(arith.generate(4)), tokenizer)
    model = tiny_llama()
    before = loss_eval(model, ds)["loss"]
    model, _ = _memorize(model, ds, tokenizer.pad_token_id, max_steps=20)
    assert loss_eval(model, ds)["loss"] < before / 2 and not model.training


def test_write_results_round_trips_and_is_all_or_nothing(tmp_path):
    out = tmp_path / "eval" / "run1"
    preds = [{"question": "q", "gold": "4", "prediction": "4", "output": "#### 4", "correct": True}]
    write_results(out, {"accuracy": 1.0, "correct": 1, "n": 1}, preds)
    assert json.loads((out / "results.json").read_text()) == {"accuracy": 1.0, "correct": 1, "n": 1}
    assert [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()] == preds
    with pytest.raises(TypeError):
        write_results(out, {"accuracy": object()}, [])
    assert json.loads((out / "results.json").read_text())["n"] == 1  # untouched
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl", "results.json"]  # no temp files left
