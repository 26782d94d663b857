"""bone inside other training stacks; one file per tool, each importing that tool only when used.

  peft.py        `flash` / `unflash`: Flash-Bone kernels for a Hugging Face PEFT MiSS model
  peft_layer.py  the flashed MiSS layer (`FlashMissLinear`) and its per-call checks
  hf_trainer.py  adapter-only checkpoints for models from `bone.apply` under `transformers.Trainer`
"""
from .peft import flash, flashed_layers, unflash

__all__ = ["flash", "flashed_layers", "unflash"]
