"""Evaluation: GSM8K-style accuracy, loss/perplexity, and result files.

`evaluate` is the one dispatch from a metric name to its evaluation (`bone eval` and the
trainer call it). The names below are imported on first use, so reading `METRICS` (the CLI's
choices) does not import torch.
"""
from .. import lazy

METRICS = ("accuracy", "loss")  # accuracy: greedy generation + final-number match; loss: loss / perplexity

_WHERE = {
    "answers_match": "answers", "extract_answer": "answers", "normalize_number": "answers", "gsm8k_eval": "gsm8k",
    "loss_eval": "loss", "write_results": "results", "eval_data": "run", "evaluate": "run",
}
__all__ = ["METRICS", *sorted(_WHERE)]
__getattr__, __dir__ = lazy.names(__name__, _WHERE, globals())
