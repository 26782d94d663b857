"""GenerationConfig: how replies are decoded (greedy or sampled, how long).

The comment after each field is its documentation (the `--help` of `bone generate` / `bone chat`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256  # most tokens generated per reply (a reply ends earlier at the end-of-sequence token)
    temperature: float = 0.0  # 0 = greedy (always the most likely token); > 0 samples, higher is more random
    top_p: float = 1.0  # sampling only: draw from the fewest tokens whose probabilities add up to top_p (1 = all)
    top_k: int = 0  # sampling only: draw from the k most likely tokens (0 = no limit)
    seed: int | None = None  # sampling only: same seed, prompts and batch size give the same text (None = random)

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive whole number, got {self.max_new_tokens!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not math.isfinite(self.temperature) or self.temperature < 0:
            raise ConfigError(f"temperature must be 0 (greedy) or a positive number, got {self.temperature!r}")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ConfigError(f"top_k must be 0 (no limit) or a positive whole number, got {self.top_k!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise ConfigError(f"seed must be a whole number, got {self.seed!r}")
        if self.greedy and (self.top_p != 1 or self.top_k != 0 or self.seed is not None):
            raise ConfigError("top_p, top_k and seed only apply when sampling: set temperature > 0 "
                              "(temperature 0 is greedy decoding)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
