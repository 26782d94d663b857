"""The benchmark's model and the methods it compares, each a fresh copy of one base model.

The base is a Llama-shaped `LlamaForCausalLM` built from a `LlamaConfig` (random weights, fp32,
no download). Every method adapts the seven projections (q, k, v, o, gate, up, down).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# method name -> what it is (also the row order of the report)
METHODS = {
    "frozen": "frozen base model (gradient flows to the input, nothing trained)",
    "peft-lora": "PEFT LoRA, r = lora_r",
    "peft-shard": "PEFT MiSS, init_weights=True (shard)",
    "peft-bat": "PEFT MiSS, init_weights='bat' (col)",
    "peft-mini": "PEFT MiSS, init_weights='mini'",
    "bone-col": "bone col, Flash-Bone (fused)",
    "bone-row": "bone row, Flash-Bone (fused)",
    "bone-shard": "bone shard, Flash-Bone (fused)",
    "bone-mini": "bone mini, Flash-Bone (fused)",
    "bone-col-ref": "bone col, plain autograd reference (fused=False)",
}


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
                raise ValueError(f"bench: --{name.replace('_', '-')} must be positive")
        if self.hidden % self.heads:
            raise ValueError(f"bench: hidden={self.hidden} must be divisible by heads={self.heads}")
        for name in ("hidden", "intermediate"):
            value = getattr(self, name)
            if value % self.r or value % self.mini_r:
                raise ValueError(f"bench: {name}={value} must be a multiple of r={self.r} and mini_r={self.mini_r}")


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
    """A fresh copy of `base` adapted by `method` (a key of METHODS), in train mode."""
    if method not in METHODS:
        raise ValueError(f"bench: unknown method {method!r}; choose from {list(METHODS)}")
    model = copy.deepcopy(base)
    if method.startswith("peft-"):
        import peft

        if method == "peft-lora":
            pc = peft.LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules=TARGETS, lora_dropout=0.0)
        else:
            init = {"peft-shard": True, "peft-bat": "bat", "peft-mini": "mini"}[method]
            pc = peft.MissConfig(r=cfg.r, init_weights=init, mini_r=cfg.mini_r, target_modules=TARGETS)
        model = peft.get_peft_model(model, pc)
    elif method.startswith("bone-"):
        import bone

        variant = method.split("-")[1]
        model = bone.apply(model, bone.BoneConfig(
            r=cfg.r, variant=variant, mini_r=cfg.mini_r if variant == "mini" else None,
            target_modules=TARGETS, fused=not method.endswith("-ref")))
    # Every method computes dL/dx through every layer, so the frozen base does the same backward.
    model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    return model.train()


def batch(cfg: BenchConfig) -> torch.Tensor:
    """Token ids `(batch, seq)`, also used as labels."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    return torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=gen)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
