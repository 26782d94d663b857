"""AdamW over a method's parameter groups and the learning-rate schedule (linear warmup, then cosine,
linear or constant), stepped by hand once per optimizer step."""
from __future__ import annotations

import math
from functools import partial

import torch

from .config import TrainConfig


def lr_factor(step: int, *, warmup: int, total: int, kind: str) -> float:
    """Multiplier of the peak lr for optimizer step `step` (0-based): linear warmup, then decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else max(0.0, 1.0 - progress)


def fuses(params) -> bool:
    """Whether torch's fused AdamW takes `params`: floating tensors, all on CPU or CUDA devices."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build(method, model: torch.nn.Module, cfg: TrainConfig, total_steps: int, *, can_fuse: bool = True):
    """(AdamW over the method's trainable parameters, in its parameter groups, each naming its
    parameters under "names"; the LambdaLR schedule over `total_steps`). AdamW is torch's fused one
    when optim.fused, the launch allows it (`can_fuse`) and every parameter is a floating tensor on a
    CPU or CUDA device; else the per-tensor loop."""
    o, s = cfg.optim, cfg.schedule
    named = dict(method.trainable(model))
    groups = [{"params": [named[n] for n in names], "lr": lr, "names": names}
              for names, lr in method.param_groups(model, cfg)]
    fused = can_fuse and o.fused and fuses(named.values())
    optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay,
                                  fused=fused or None)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, warmup=s.warmup_steps, total=total_steps, kind=s.scheduler))
    return optimizer, schedule
