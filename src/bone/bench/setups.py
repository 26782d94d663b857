"""The benchmark's model and the methods it compares, each a fresh copy of one base model.

The base is a Llama-shaped `LlamaForCausalLM` built from a `LlamaConfig` (random weights, fp32,
no download). Every method adapts Llama's default targets (`bone.inject.DEFAULT_TARGETS["llama"]`:
q, k, v, o, gate, up, down). A method is one `Setup` in `SETUPS`; a new one is one more entry.
Importing this module does not import torch (`bone bench --help` lists SETUPS); building does.
"""
from __future__ import annotations

import copy

from ..config import BoneConfig
from ..errors import ConfigError
from .config import BenchConfig

def targets() -> list[str]:
    """Llama's default Bone targets: the seven projections."""
    from ..inject import DEFAULT_TARGETS

    return list(DEFAULT_TARGETS["llama"])


class Setup:
    """One benchmarked method: a line for the report and how it adapts a copy of the base."""

    about: str
    needs_peft: bool = False  # adapt() imports PEFT
    on_quantized: bool = True  # runs on a --quant base
    color: str = "tab:gray"  # its bars in bench.png

    def adapt(self, model, cfg: BenchConfig):
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

        pc = peft.LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules=targets(), lora_dropout=0.0)
        return peft.get_peft_model(model, pc)


class PeftMiss(Setup):
    """PEFT's MiSS with the `init_weights` tag that selects `variant`."""

    needs_peft, color = True, "tab:orange"

    def __init__(self, variant: str):
        self.variant = variant

    @property
    def about(self) -> str:
        from .. import variants

        return f"PEFT MiSS, init_weights={variants.get(self.variant).peft_init!r} ({self.variant})"

    def adapt(self, model, cfg):
        import peft

        from .. import variants

        pc = peft.MissConfig(r=cfg.r, init_weights=variants.get(self.variant).peft_init, mini_r=cfg.mini_r,
                             target_modules=targets())
        return peft.get_peft_model(model, pc)


class PeftMissFlash(PeftMiss):
    """PEFT MiSS after `bone.flash`: PEFT's layers running the Flash-Bone kernels (issue 12)."""
    color, on_quantized = "tab:purple", False

    @property
    def about(self) -> str:
        return super().about + " + bone.flash"

    def adapt(self, model, cfg):
        from ..integrations import flash, flashed_layers

        model = flash(super().adapt(model, cfg))
        n, want = len(flashed_layers(model)), len(targets()) * cfg.layers
        if n != want:  # PEFT's own path would be measured under the flash name
            raise RuntimeError(f"bone.flash took {n} of the {want} MiSS layers")
        return model


class Bone(Setup):
    """bone's `variant`, through the fused Flash-Bone kernels or the plain autograd reference."""

    color = "tab:blue"

    def __init__(self, variant: str, fused: bool = True, keep_merged: bool = False):
        self.variant, self.fused, self.keep_merged = variant, fused, keep_merged
        how = "Flash-Bone (fused)" if fused else "plain autograd reference (fused=False)"
        self.about = f"bone {variant}, {how}" + (", merged weight kept for backward (keep_merged=True)" if keep_merged else "")

    def adapt(self, model, cfg):
        from .. import variants
        from ..inject import apply

        mini_r = cfg.mini_r if variants.get(self.variant).uses_mini_r else None
        return apply(model, BoneConfig(r=cfg.r, variant=self.variant, mini_r=mini_r, target_modules=targets(),
                                       fused=self.fused, keep_merged=self.keep_merged))


# method name -> its setup (also the row order of the report)
SETUPS: dict[str, Setup] = {
    "frozen": Frozen(),
    "peft-lora": PeftLora(),
    "peft-shard": PeftMiss("shard"),
    "peft-bat": PeftMiss("col"),
    "peft-mini": PeftMiss("mini"),
    "peft-bat+flash": PeftMissFlash("col"),
    "peft-shard+flash": PeftMissFlash("shard"),
    "peft-mini+flash": PeftMissFlash("mini"),
    "bone-col": Bone("col"),
    "bone-row": Bone("row"),
    "bone-shard": Bone("shard"),
    "bone-mini": Bone("mini"),
    "bone-col-ref": Bone("col", fused=False),
    "bone-col-keep": Bone("col", keep_merged=True),
    "bone-shard-keep": Bone("shard", keep_merged=True),
}


# `bone bench --quant`'s methods (issue 13): the quantized base, QLoRA, PEFT MiSS and bone on it
QUANT_METHODS = ["frozen", "peft-lora", "peft-shard", "peft-bat", "bone-col", "bone-shard"]


def get(method: str) -> Setup:
    try:
        return SETUPS[method]
    except KeyError:
        raise ConfigError(f"unknown bench method {method!r}; choose from {list(SETUPS)}") from None


def build_base(cfg: BenchConfig, quant: str | None = None):
    """A random-weight Llama model, frozen, fp32; `quant` (nf4, fp4, int8): its seven projections
    quantized (`bench.quant`)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    lc = LlamaConfig(hidden_size=cfg.hidden, intermediate_size=cfg.intermediate, num_hidden_layers=cfg.layers,
                     num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads, vocab_size=cfg.vocab,
                     max_position_embeddings=max(cfg.seq, 64), tie_word_embeddings=False)
    model = LlamaForCausalLM(lc).float()
    model.requires_grad_(False)
    if quant is not None:
        from .quant import quantize

        quantize(model, quant, targets())
    return model


def make(method: str, base, cfg: BenchConfig):
    """A fresh copy of `base` adapted by `method` (a key of SETUPS), in train mode."""
    model = get(method).adapt(copy.deepcopy(base), cfg)
    # Every method computes dL/dx through every layer, so the frozen base does the same backward.
    model.get_input_embeddings().register_forward_hook(lambda m, i, out: out.requires_grad_(True))
    return model.train()


def batch(cfg: BenchConfig):
    """Token ids `(batch, seq)`, also used as labels."""
    import torch

    gen = torch.Generator().manual_seed(cfg.seed + 1)
    return torch.randint(0, cfg.vocab, (cfg.batch, cfg.seq), generator=gen)


def trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]
