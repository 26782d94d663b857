"""One evaluation by metric name (`METRICS`): what `bone eval` and the trainer both call.

    data = eval_data(records, tokenizer, metric="loss", template="alpaca", fields={}, max_length=512)
    metrics, predictions = evaluate(model, tokenizer, data, metric="loss", template="alpaca")

`eval_data` does the checks that need no model (fields, templates, tokenization), so a run can
refuse bad held-out data before it trains.
"""
from __future__ import annotations

from ..data.templates import to_examples
from ..data.tokenize import tokenize_examples
from ..errors import ConfigError
from . import METRICS
from .gsm8k import gsm8k_eval
from .loss import loss_eval


def _check(metric: str) -> None:
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {METRICS}")


def eval_data(records, tokenizer, *, metric: str, template: str, fields: dict | None = None, max_length: int = 512,
              source: str | None = None):
    """What `evaluate` reads for `metric`: Examples (accuracy: prompt and gold answer) or the
    tokenized examples (loss: `max_length` as in training). `fields` (prompt_field, response_field,
    messages_field; None = auto-detected) name the records' fields for either metric; `source` says
    which data they are in an error (`to_examples`)."""
    _check(metric)
    examples = to_examples(records, source=source, **(fields or {}))
    if metric == "accuracy":
        return examples
    return tokenize_examples(examples, tokenizer, template=template, max_length=max_length)


def evaluate(model, tokenizer, data, *, metric: str, template: str, batch_size: int = 8,
             max_new_tokens: int = 256) -> tuple[dict, list[dict]]:
    """(metrics, predictions) of `model` on `data` (from `eval_data`); loss has no predictions."""
    _check(metric)
    if metric == "accuracy":
        return gsm8k_eval(model, tokenizer, data, template=template, batch_size=batch_size, max_new_tokens=max_new_tokens)
    return loss_eval(model, data, batch_size=batch_size), []
