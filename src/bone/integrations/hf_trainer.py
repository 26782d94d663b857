"""Adapter-only checkpoints for a model from `bone.apply` / `bone.load` under `transformers.Trainer`.

    from bone.integrations.hf_trainer import BoneTrainer
    model = bone.apply(AutoModelForCausalLM.from_pretrained(path), bone.BoneConfig(r=64))
    trainer = BoneTrainer(model=model, args=TrainingArguments(...), train_dataset=..., data_collator=...)
    trainer.train()                                  # out/checkpoint-N: the adapter + Trainer's own state
    trainer.train(resume_from_checkpoint=True)       # continues exactly from the newest checkpoint
    bone.load(base, "out/checkpoint-N")              # (col / shard / mini also: PeftModel.from_pretrained)

A checkpoint folder holds `bone.save`'s adapter directory (adapter_config.json,
adapter_model.safetensors, bone_config.json) instead of the full model, next to what Trainer writes
itself (optimizer.pt, scheduler.pt, rng_state.pth, trainer_state.json, training_args.bin and the
tokenizer when one is given). `AdapterCheckpoints` is a mixin, so TRL trainers take it too:
`class BoneSFTTrainer(AdapterCheckpoints, SFTTrainer): pass`.

Why a mixin over a `TrainerCallback`: Trainer writes a checkpoint's model in `_save` (through
`save_model`) before any callback's `on_save` runs, and reads it back in `_load_from_checkpoint`
(resume) and `_load_best_model` (`load_best_model_at_end`), which no callback reaches. A callback
could only delete full weights after they were written, and resuming would then fail. Overriding
those three methods is how Trainer itself treats a `PeftModel`'s adapter-only checkpoints.
One process or DDP; FSDP and DeepSpeed runs, whose checkpoints Trainer writes its own way, are
refused (use `bone train` for those).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME

from ..errors import AdapterError, UsageError
from ..inject import adapter_config, bone_layers
from ..io import read_adapter, save


def load_adapter_into(model: nn.Module, path: str | os.PathLike) -> None:
    """Copy the adapter saved at `path` into the Bone layers of `model` (same variant, r and layers).

    Everything is checked before any block changes; raises AdapterError naming what differs."""
    cfg, blocks, _ = read_adapter(path)
    have = adapter_config(model)
    if (cfg.variant, cfg.r, cfg.mini_r) != (have.variant, have.r, have.mini_r):
        raise AdapterError(f"{path} holds a {cfg.variant} r={cfg.r} adapter, the model has {have.variant} r={have.r}: "
                           "resume with the model configured as the checkpoint was")
    layers = dict(bone_layers(model))
    if set(blocks) != set(layers):
        missing, extra = sorted(set(layers) - set(blocks)), sorted(set(blocks) - set(layers))
        raise AdapterError(f"{path} does not fit this model: missing {missing[:4]}, unexpected {extra[:4]}")
    for name, layer in layers.items():
        if blocks[name].shape != layer.bone_block.shape:
            raise AdapterError(f"{path}: block {name} has shape {tuple(blocks[name].shape)}, "
                               f"the model's is {tuple(layer.bone_block.shape)}")
    with torch.no_grad():
        for name, layer in layers.items():
            layer.bone_block.copy_(blocks[name])


class AdapterCheckpoints:
    """Mixin for `transformers.Trainer` (and subclasses): checkpoints hold only the Bone adapter."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not any(True for _ in bone_layers(self.model)):
            raise UsageError(f"{type(self).__name__} trains models from bone.apply or bone.load, and this "
                             f"{type(self.model).__name__} has no Bone layer (for a PeftModel use transformers.Trainer)")
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise UsageError(f"{type(self).__name__} writes adapter checkpoints for one process or DDP; "
                             "for FSDP or DeepSpeed use `bone train` with an Accelerate config")

    def _bone_model(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """The adapter (bone.save layout), the tokenizer and the training arguments at `output_dir`.
        `state_dict` (Trainer passes one only for the FSDP / DeepSpeed runs refused above) is unused."""
        if not self.args.should_save:
            return
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        save(self._bone_model(), output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, output_dir / TRAINING_ARGS_NAME)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        model = self._bone_model() if model is None else self.accelerator.unwrap_model(model, keep_torch_compile=False)
        load_adapter_into(model, resume_from_checkpoint)

    def _load_best_model(self) -> None:
        load_adapter_into(self._bone_model(), self.state.best_model_checkpoint)


class BoneTrainer(AdapterCheckpoints, Trainer):
    """`transformers.Trainer` whose checkpoints hold only the Bone adapter (see the module docstring)."""
