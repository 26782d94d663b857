"""The benchmark's model and the methods it compares, each a fresh copy of one base model.

The base is a Llama-shaped `LlamaForCausalLM` built from a `LlamaConfig` (random weights, fp32,
no download). Every method adapts Llama's default targets (`bone.inject.DEFAULT_TARGETS["llama"]`:
q, k, v, o, gate, up, down). A method is one `Setup` in `SETUPS`; a new one is one more entry.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .. import variants
from ..config import BoneConfig
from ..errors import ConfigError
from ..inject import DEFAULT_TARGETS, apply

TARGETS = list(DEFAULT_TARGETS["llama"])


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


class Setup:
    """One benchmarked method: a line for the report and how it adapts a copy of the base."""

    about: str
    needs_peft: bool = False  # adapt() imports PEFT
    color: str = "tab:gray"  # its bars in bench.png

    def adapt(self, model: nn.Module, cfg: BenchConfig) -> nn.Module:
        """`model` (a fresh copy of the base) with this method applied."""
        raise NotImplementedError


class Frozen(Setup):
    about = "frozen base model (gradient flows to the input, nothing trained)"

    def adapt(self, model, cfg):
        return model


class PeftLora(Setup):
    about = "PEFT LoRA, r = lora_r"
    needs_peft, color = True, "tab:orange"

    def adapt(self, model, cfg):
        import peft

        pc = peft.LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules=TARGETS, lora_dropout=0.0)
        return peft.get_peft_model(model, pc)


class PeftMiss(Setup):
    """PEFT's MiSS with the `init_weights` tag that selects `variant`."""

    needs_peft, color = True, "tab:orange"

    def __init__(self, variant: str):
        self.variant = variants.get(variant)
        self.about = f"PEFT MiSS, init_weights={self.variant.peft_init!r} ({variant})"

    def adapt(self, model, cfg):
        import peft

        pc = peft.MissConfig(r=cfg.r, init_weights=self.variant.peft_init, mini_r=cfg.mini_r, target_modules=TARGETS)
        return peft.get_peft_model(model, pc)


class Bone(Setup):
    """bone's `variant`, through the fused Flash-Bone kernels or the plain autograd reference."""

    color = "tab:blue"

    def __init__(self, variant: str, fused: bool = True, keep_merged: bool = False):
        self.variant, self.fused, self.keep_merged = variants.get(variant), fused, keep_merged
        how = "Flash-Bone (fused)" if fused else "plain autograd reference (fused=False)"
        self.about = f"bone {variant}, {how}" + (", W' kept for backward (keep_merged=True)" if keep_merged else "")

    def adapt(self, model, cfg):
        mini_r = cfg.mini_r if self.variant.uses_mini_r else None
        return apply(model, BoneConfig(r=cfg.r, variant=self.variant.name, mini_r=mini_r, target_modules=TARGETS,
                                       fused=self.fused, keep_merged=self.keep_merged))


# method name -> its setup (also the row order of the report)
SETUPS: dict[str, Setup] = {
    "frozen": Frozen(),
    "peft-lora": PeftLora(),
    "peft-shard": PeftMiss("shard"),
    "peft-bat": PeftMiss("col"),
    "peft-mini": PeftMiss("mini"),
    "bone-col": Bone("col"),
    "bone-row": Bone("row"),
    "bone-shard": Bone("shard"),
    "bone-mini": Bone("mini"),
    "bone-col-ref": Bone("col", fused=False),
    "bone-col-keep": Bone("col", keep_merged=True),
    "bone-shard-keep": Bone("shard", keep_merged=True),
}


def get(method: str) -> Setup:
    try:
        return SETUPS[method]
    except KeyError:
        raise ConfigError(f"unknown bench method {method!r}; choose from {list(SETUPS)}") from None


def build_base(cfg: BenchConfig) -> nn.Module:
    """A random-weight Llama model, frozen, fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    lc = LlamaConfig(hidden_size=cfg.hidden, intermediate_size=cfg.intermediate, num_hidden_layers=cfg.layers,
                     num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads, vocab_size=cfg.vocab,
                     max_position_embeddings=max(cfg.seq, 64), tie_word_embeddings=False)
    model = LlamaForCausalLM(lc).float()
    model.requires_grad_(False)
    return model


def make(method: str, base: nn.Module, cfg: BenchConfig) -> nn.Module:
    """A fresh copy of `base` adapted by `method` (a key of SETUPS), in train mode."""
    model = get(method).adapt(copy.deepcopy(base), cfg)
    # Every method computes dL/dx through every layer, so the frozen base does the same backward.
    model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    return model.train()


def batch(cfg: BenchConfig) -> torch.Tensor:
    """Token ids `(batch, seq)`, also used as labels."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    return torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=gen)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
