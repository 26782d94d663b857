"""Choosing the next token from the logits: greedy argmax, or a draw after temperature, top-k and
top-p (nucleus) filtering, from a seeded generator of its own (the global torch RNG is untouched)."""
from __future__ import annotations

import torch
from torch import Tensor

from .config import GenerationConfig


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """(B, V) logits with every token outside the top-k / top-p set of its row set to -inf.

    top-k keeps the k largest logits (ties at the k-th value are all kept); top-p keeps the most
    likely tokens, in order, until their probability reaches top_p (always at least one)."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # probability mass of the tokens ranked above each one
        drop_sorted = before >= top_p  # the top token has before == 0, so it always stays
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class Sampler:
    """`sampler(logits (B, V)) -> tokens (B,)` following a GenerationConfig."""

    def __init__(self, cfg: GenerationConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.generator, self.seed = None, None  # seed: the one in use when sampling (drawn if cfg.seed is None)
        if not cfg.greedy:
            self.generator = torch.Generator(device=device)
            self.seed = cfg.seed if cfg.seed is not None else self.generator.seed()
            self.generator.manual_seed(self.seed)

    def __call__(self, logits: Tensor) -> Tensor:
        if self.generator is None:
            return logits.argmax(-1)
        cfg = self.cfg
        logits = filter_logits(logits.float() / cfg.temperature, cfg.top_k, cfg.top_p)
        return torch.multinomial(logits.softmax(-1), 1, generator=self.generator).squeeze(-1)
