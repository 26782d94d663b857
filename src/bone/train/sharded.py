"""Checkpoint I/O that also works when training state is sharded across processes.

- FSDP2 (`torch.distributed.fsdp.fully_shard`): every parameter is a DTensor holding 1/N of its
  rows on each of N processes, and so are AdamW's `exp_avg` / `exp_avg_sq`.
- DeepSpeed ZeRO (stages 1-3): the fp32 master copy of each trainable parameter and its AdamW
  state live in flat partitions, 1/N per process (stage 3 partitions the model's parameters too).

These helpers gather the full tensors for saving (collective: every process calls them, in the
same order; only the main process writes) and scatter them back when resuming, so a checkpoint
written by N sharded processes has exactly the layout of a single-process one, and resumes in any
of the three kinds of run. What is trained, and how it is saved and read back, is the method's
(`bone.methods.Method`: `trainable`, `save`, `read_trained`); tensors are keyed by the parameter
names `method.trainable(model)` gives.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import AdapterError
from ..methods import Method


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _is_zero(p) -> bool:
    """True for a parameter DeepSpeed ZeRO manages: stages 1-2 link it to its fp32 fragment
    (`_hp_mapping`), stage 3 also partitions the parameter itself (`ds_id`)."""
    return hasattr(p, "_hp_mapping") or hasattr(p, "ds_id")


def full(t):
    """The whole tensor: all-gathers a DTensor or the fp32 master of a ZeRO parameter
    (collective); returns anything else as is."""
    if _is_dtensor(t):
        return t.full_tensor()
    if _is_zero(t):
        from deepspeed.utils import safe_get_full_fp32_param

        return safe_get_full_fp32_param(t)
    return t


def _zero_managed(model: nn.Module, method: Method) -> bool:
    """True when DeepSpeed ZeRO holds the training state."""
    return any(_is_zero(p) for _, p in method.trainable(model))


def is_sharded(model: nn.Module, method: Method) -> bool:
    """True when the training state is split across processes (FSDP2 or ZeRO)."""
    return _zero_managed(model, method) or any(_is_dtensor(p) for _, p in method.trainable(model))


def is_partitioned(model: nn.Module) -> bool:
    """True when no process holds the whole model (FSDP2 or ZeRO stage 3): it cannot run alone."""
    return any(_is_dtensor(p) or hasattr(p, "ds_id") for p in model.parameters())


def save_trained(model: nn.Module, method: Method, path: Path, is_main: bool) -> None:
    """`method.save` of the full trained tensors at `path` (main process writes); collective when sharded."""
    if not is_sharded(model, method):
        if is_main:
            method.save(model, path)
        return
    tensors = {name: full(p).detach().cpu() for name, p in method.trainable(model)}
    if is_main:
        method.save(model, path, tensors=tensors)


def load_trained(model: nn.Module, method: Method, path: Path) -> None:
    """Copy the tensors `method.save` wrote at `path` into a model the method prepared with the same
    config; sharded parameters take their own part of the saved full tensor (every process reads)."""
    from torch.distributed.tensor import distribute_tensor

    saved = method.read_trained(model, path)
    with torch.no_grad():
        for name, p in method.trainable(model):
            whole = saved[name]
            shape = tuple(getattr(p, "ds_shape", p.shape))  # ZeRO-3 leaves an empty placeholder in the module
            if tuple(whole.shape) != shape:
                raise AdapterError(f"checkpoint {path}: {name} has shape {tuple(whole.shape)}, the model's has {shape}")
            if _is_dtensor(p):
                p.copy_(distribute_tensor(whole.to(p.device, p.dtype), p.device_mesh, p.placements, src_data_rank=None))
            elif _is_zero(p):
                _set_zero_param(p, whole)
            else:
                p.copy_(whole)


def optimizer_state(model: nn.Module, method: Method, optimizer) -> dict:
    """The optimizer's state dict; for a sharded model the full (gathered) one, keyed by parameter
    name, on the main process (collective). Unsharded: plain `optimizer.state_dict()`."""
    if not is_sharded(model, method):
        return optimizer.state_dict()
    if _zero_managed(model, method):
        return _zero_optimizer_state(model, method, optimizer)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _keyed_by_name(model: nn.Module, method: Method, state: dict) -> dict:
    """`state` with its parameter ids (plain `optimizer.state_dict()`) replaced by parameter names,
    the keys `get_optimizer_state_dict` writes; a state already keyed by name is returned as is."""
    saved_ids = [i for g in state["param_groups"] for i in g["params"]]
    if all(isinstance(i, str) for i in saved_ids):
        return state
    current = _group_names(model, method, state["param_groups"])  # the optimizer was built from these, in this order
    if len(current) != len(saved_ids):
        raise AdapterError(f"optimizer state holds {len(saved_ids)} parameters, this model trains {len(current)}")
    by_id = dict(zip(saved_ids, current))
    return {"state": {by_id[i]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [by_id[i] for i in g["params"]]} for g in state["param_groups"]]}


def load_optimizer_state(model: nn.Module, method: Method, optimizer, state: dict) -> None:
    """Inverse of `optimizer_state`; every process passes the full state read from the checkpoint.
    Either layout (by id from unsharded runs, by name from FSDP runs) loads into either kind of run."""
    by_name = any(isinstance(i, str) for g in state["param_groups"] for i in g["params"])
    if not is_sharded(model, method) and not by_name:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    full_state = _keyed_by_name(model, method, state)
    if _zero_managed(model, method):
        _set_zero_optimizer_state(model, method, optimizer, full_state)
        return
    set_optimizer_state_dict(model, optimizer, full_state, options=StateDictOptions(full_state_dict=True))


def _group_names(model: nn.Module, method: Method, groups: list[dict]) -> list[str]:
    """The parameter names of optimizer `groups`, in order: each group's "names" (the trainer writes
    them), or for a single group without them the method's trainable order."""
    if all("names" in g for g in groups):
        return [n for g in groups for n in g["names"]]
    if len(groups) != 1:
        raise AdapterError(f"optimizer state has {len(groups)} parameter groups without parameter names")
    return [n for n, _ in method.trainable(model)]


# ---------------------------------------------------------------- DeepSpeed ZeRO
ADAM_KEYS = ("exp_avg", "exp_avg_sq")


def _torch_optimizer(optimizer) -> torch.optim.Optimizer:
    """The torch AdamW inside DeepSpeed's ZeRO optimizer; its parameters are the flat fp32 partitions."""
    while not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def _set_zero_param(p: nn.Parameter, full: torch.Tensor) -> None:
    """Set a ZeRO parameter everywhere it lives: the fp32 master copy the optimizer steps, and the
    module's working copy (whole under stages 1-2, partitioned under stage 3). Collective."""
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param

    safe_set_full_fp32_param(p, full.to(p.device, torch.float32))
    with deepspeed.zero.GatheredParameters([p], modifier_rank=0, enabled=hasattr(p, "ds_id")):
        p.copy_(full.to(p.device, p.dtype))  # stage 3: rank 0's copy is scattered back on exit


def _zero_optimizer_state(model: nn.Module, method: Method, optimizer) -> dict:
    """AdamW state gathered from ZeRO partitions, keyed by parameter name (collective); the state
    is empty before the first step, as a fresh AdamW's is."""
    from deepspeed.utils import safe_get_full_optimizer_state

    inner = _torch_optimizer(optimizer)
    trainable = method.trainable(model)
    steps = [s["step"] for s in inner.state.values() if "step" in s]
    state = {}
    if steps:
        for name, p in trainable:
            moments = {k: safe_get_full_optimizer_state(p, k).detach().cpu() for k in ADAM_KEYS}
            state[name] = {"step": steps[0].detach().cpu().clone(), **moments}
    names = _group_names(model, method, inner.param_groups)
    groups, at = [], 0
    for g in inner.param_groups:  # DeepSpeed keeps each group's keys, its "params" are flat partitions
        count = len(g["names"]) if "names" in g else len(names)
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": names[at: at + count]})
        at += count
    return {"state": state, "param_groups": groups}


def _set_zero_optimizer_state(model: nn.Module, method: Method, optimizer, state: dict) -> None:
    """Scatter a full AdamW state (keyed by name) into ZeRO's partitions. AdamW creates its state on
    the first step, so the partitions' state is created here first, as AdamW would."""
    from deepspeed.utils import safe_set_full_optimizer_state

    inner = _torch_optimizer(optimizer)
    if len(state["param_groups"]) != len(inner.param_groups):
        raise AdapterError(f"optimizer state has {len(state['param_groups'])} parameter groups, this run has {len(inner.param_groups)}")
    for group, saved_group in zip(inner.param_groups, state["param_groups"]):  # lr and the other hyperparameters
        group.update({k: v for k, v in saved_group.items() if k != "params"})
    saved = state["state"]
    if not saved:
        return
    step = next(iter(saved.values()))["step"]
    # stage 3 hands its flat fp32 partitions to AdamW only while stepping; stages 1-2 leave them in param_groups
    flats = getattr(optimizer, "fp32_partitioned_groups_flat", None) or [p for g in inner.param_groups for p in g["params"]]
    for flat in flats:
        inner.state[flat] = {"step": step.clone().to(torch.float32), **{k: torch.zeros_like(flat) for k in ADAM_KEYS}}
    link = getattr(optimizer, "_lazy_init_hp_params_optimizer_state", None)  # stages 1-2 map fragments to the
    if link is not None:                                                      # state once it exists (as their step does)
        link()
    for name, p in method.trainable(model):
        if name not in saved:
            raise AdapterError(f"optimizer state has no entry for {name}")
        for k in ADAM_KEYS:
            safe_set_full_optimizer_state(p, saved[name][k].to(p.device, torch.float32), k)
