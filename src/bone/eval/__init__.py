"""Evaluation: GSM8K-style accuracy, loss/perplexity, and result files."""
from .answers import answers_match, extract_answer, normalize_number
from .gsm8k import gsm8k_eval
from .loss import loss_eval
from .results import write_results

__all__ = ["answers_match", "extract_answer", "normalize_number", "gsm8k_eval", "loss_eval", "write_results"]
