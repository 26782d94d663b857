"""The benchmark's model shape (`BenchConfig`, one `--option` each) and its named presets (`SHAPES`).
No torch here: `bone bench --help` is built from these."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class BenchConfig:
    hidden: int = 1024  # Llama hidden size
    intermediate: int = 2816  # MLP width (a multiple of r and mini_r)
    layers: int = 2  # decoder layers
    heads: int = 16  # attention heads (no GQA: kv heads = heads)
    vocab: int = 1024  # vocabulary (small, so the frozen lm_head does not dominate)
    seq: int = 256  # tokens per sequence
    batch: int = 2  # sequences per step
    r: int = 64  # Bone / MiSS block size
    mini_r: int = 64  # mini's shard width
    lora_r: int = 32  # LoRA rank (PEFT's MiSS benchmark compares against r=32)
    seed: int = 0  # weights and batch

    def check(self) -> None:
        for name in ("hidden", "intermediate", "layers", "heads", "vocab", "seq", "batch", "r", "mini_r", "lora_r"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden={self.hidden} must be divisible by heads={self.heads}")
        for name in ("hidden", "intermediate"):
            value = getattr(self, name)
            if value % self.r or value % self.mini_r:
                raise ConfigError(f"{name}={value} must be a multiple of r={self.r} and mini_r={self.mini_r}")


# --shape NAME -> BenchConfig fields that differ from the defaults
SHAPES: dict[str, dict[str, int]] = {
    "default": {},
    # few tokens per call (issue 16's probe): Llama 512 / MLP 1536 / 4 layers / vocab 4096, batch 2 x 256
    "small": dict(hidden=512, intermediate=1536, layers=4, heads=8, vocab=4096, seq=256, batch=2),
}
