"""How `bone train` meets Hugging Face Accelerate: the Accelerator for this launch (one process,
DDP, FSDP2 or DeepSpeed ZeRO, on GPUs or CPU processes), the launch configs it refuses, the
DeepSpeed config it fills in, and the clean exit of multi-process CPU runs.

bone's own config is the source of truth for the math: batch split, accumulation, clipping and
precision; the launch config only says how many processes and how the state is sharded.
"""
from __future__ import annotations

import os
import sys

import torch
from accelerate.utils import DistributedType

from ..errors import ConfigError
from . import sharded
from .config import TrainConfig


def _has_accelerator() -> bool:
    return torch.cuda.is_available() or (hasattr(torch, "accelerator") and torch.accelerator.is_available())


def _deepspeed_launch() -> bool:
    """True under `accelerate launch` with a DeepSpeed config (Accelerate's launcher sets this flag)."""
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")


def _forget_single_process_state(precision: str) -> None:
    """Accelerate keeps one global state per process; a second run in the same (single, not
    launched) process with another precision would be refused, so start that state afresh."""
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState._shared_state
    if state and PartialState().num_processes == 1 and str(state.get("_mixed_precision")) != precision:
        AcceleratorState._reset_state(reset_partial_state=True)


def make_accelerator(cfg: TrainConfig):
    """The Accelerator for this launch, checked (see `check_launch`)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    precision = "bf16" if cfg.schedule.precision == "bf16" else "no"
    _forget_single_process_state(precision)
    # without any accelerator, cpu=True is what lets Accelerate see a torchrun launch as multi-CPU (gloo);
    # DeepSpeed on CPUs (its CPU accelerator) is told to use gloo instead
    cpu_only, deepspeed = not _has_accelerator(), _deepspeed_launch()
    acc = Accelerator(mixed_precision=precision, cpu=cpu_only and not deepspeed,
                      gradient_accumulation_steps=cfg.schedule.grad_accum,
                      kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if cpu_only and deepspeed else None)
    check_launch(acc, cfg)
    if acc.gradient_accumulation_steps != cfg.schedule.grad_accum:  # ACCELERATE_GRADIENT_ACCUMULATION_STEPS set
        acc.gradient_accumulation_steps = cfg.schedule.grad_accum   # bone's schedule.grad_accum decides
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # what `accelerate launch` was given
    if acc.is_main_process and launcher_precision not in ("no", precision):
        print(f"note: the launch config's mixed_precision={launcher_precision} is not used: bone's "
              f"schedule.precision ({cfg.schedule.precision}) decides", flush=True)
    return acc


def check_launch(acc, cfg: TrainConfig) -> None:
    """Refuse, before any heavy work, the launch configs bone cannot run or that would set what
    bone's config owns: FSDP1, FSDP2's own activation checkpointing, and for DeepSpeed zero.Init
    loading, offload, an optimizer or scheduler section, or a precision other than schedule.precision."""
    kind = acc.distributed_type
    if kind == DistributedType.FSDP and not acc.is_fsdp2:
        raise ConfigError("bone train supports FSDP only as FSDP2: set `fsdp_version: 2` under fsdp_config in the "
                         "Accelerate config (or launch with plain DDP, distributed_type: MULTI_GPU)")
    if kind == DistributedType.FSDP and acc.state.fsdp_plugin.activation_checkpointing:
        raise ConfigError("set `fsdp_activation_checkpointing: false` in the Accelerate config and "
                         "model.gradient_checkpointing=true in bone's config instead (FSDP's wrapper renames the "
                         "adapted layers, so the saved adapter would not fit the model)")
    if kind != DistributedType.DEEPSPEED:
        return
    if cfg.optim.skip_nonfinite:
        raise ConfigError("optim.skip_nonfinite needs bone to look at the loss and gradients before the update, but "
                          "DeepSpeed's engine applies it inside backward: set optim.skip_nonfinite=0 (a non-finite step "
                          "then stops the run), or launch with DDP or FSDP2")
    plugin = acc.state.deepspeed_plugin
    if plugin.zero3_init_flag:
        raise ConfigError("bone train needs every process to load the whole base model before bone.apply: set "
                         "`zero3_init_flag: false` under deepspeed_config in the Accelerate config (ZeRO-3 then "
                         "partitions the model when training starts)")
    ds = plugin.deepspeed_config
    zero = ds.get("zero_optimization", {})
    for what in ("offload_optimizer", "offload_param"):
        if str(zero.get(what, {}).get("device", "none")).lower() != "none":
            raise ConfigError(f"bone train does not support DeepSpeed {what} (untested; with it DeepSpeed also swaps "
                             f"bone's AdamW for its CPU Adam): set its device to none")
    for section, owner in (("optimizer", "bone's AdamW (optim.*)"), ("scheduler", "bone's schedule.* (warmup, cosine/linear)")):
        if section in ds:
            raise ConfigError(f"the DeepSpeed config has a {section!r} section, but {owner} drives training and its "
                             f"checkpoints: remove that section from the DeepSpeed config")
    enabled = {k: str(ds.get(k, {}).get("enabled", False)).lower() == "true" for k in ("fp16", "bf16")}
    if enabled["fp16"] or enabled["bf16"] != (cfg.schedule.precision == "bf16"):
        on = [k for k, v in enabled.items() if v] or ["fp32"]
        raise ConfigError(f"the DeepSpeed config trains in {on[0]} but bone's schedule.precision is {cfg.schedule.precision}: "
                         f"bone decides precision (fp32 or bf16), so set the DeepSpeed config's fp16/bf16 'enabled' to "
                         f"\"auto\" (or remove them)")


def fill_deepspeed_config(acc, cfg: TrainConfig) -> None:
    """Before `prepare` under DeepSpeed: bone's batch, accumulation and clipping go into DeepSpeed's
    config (replacing its values or `auto`); DeepSpeed's engine then steps bone's torch AdamW."""
    s = cfg.schedule
    ds = acc.state.deepspeed_plugin.deepspeed_config
    ds.update(train_micro_batch_size_per_gpu=s.batch_size, gradient_accumulation_steps=s.grad_accum,
              train_batch_size=s.batch_size * s.grad_accum * acc.num_processes,
              gradient_clipping=cfg.optim.max_grad_norm or 0.0)
    ds.setdefault("zero_allow_untested_optimizer", True)  # torch's AdamW, which bone's checkpoints describe


def unwrap(acc, model):
    """The model bone built, without the launch's wrappers (DDP, torch.compile, DeepSpeed's engine; FSDP2 does not wrap).

    Not `acc.unwrap_model`: whenever DeepSpeed is installed that imports it, and importing deepspeed
    prints "Setting accelerator to CPU" on machines without a GPU, in runs that do not use it."""
    if acc.distributed_type == DistributedType.DEEPSPEED:
        return acc.unwrap_model(model)
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile (a dynamo launch)
            model = model._orig_mod
        else:
            return model


def describe(acc, model) -> str:
    """How the launch splits the work, e.g. "DDP", "FSDP2, model partitioned", "DeepSpeed ZeRO-2"."""
    kind = acc.distributed_type
    text = {DistributedType.NO: "single process", DistributedType.FSDP: "FSDP2"}.get(kind, "DDP")
    if kind == DistributedType.DEEPSPEED:
        text = f"DeepSpeed ZeRO-{acc.state.deepspeed_plugin.zero_stage}"
    if sharded.is_partitioned(unwrap(acc, model)):
        text += ", model partitioned"
    return text


def leave_gloo(acc, code: int) -> None:
    """End a multi-process CPU (gloo) run here with exit status `code`, skipping interpreter finalization.

    torch 2.13's gloo worker threads may free the last collective's tensors while the interpreter
    finalizes, which aborts that process ("terminate called without an active exception") and
    makes the launcher report a finished run as failed. Everything is written and every process
    has passed the barrier below, so nothing is lost. NCCL runs and single processes return."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_backend() == "gloo"):
        return
    acc.wait_for_everyone()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
