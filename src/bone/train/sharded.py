"""Checkpoint I/O that also works when the model is sharded with FSDP2 (`torch.distributed.fsdp.fully_shard`).

Under FSDP2 every parameter is a DTensor holding 1/N of its rows on each of N processes. A Bone
adapter block (r, in) or (out, r) is then split across processes, and so are AdamW's `exp_avg` /
`exp_avg_sq`. These helpers gather the full tensors for saving (collective: every process calls
them; only the main process writes) and scatter them back when resuming, so a checkpoint written
by N sharded processes has exactly the layout of a single-process one.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import bone_layers, read_adapter, save


def _is_dtensor(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: all-gathers a DTensor (collective), returns any other tensor as is."""
    return t.full_tensor() if _is_dtensor(t) else t


def is_sharded(model: nn.Module) -> bool:
    """True when the model's adapter blocks are FSDP2 DTensor shards."""
    return any(_is_dtensor(layer.bone_block) for _, layer in bone_layers(model))


def full_blocks(model: nn.Module) -> dict[str, torch.Tensor]:
    """{module name: full adapter block on the CPU}; all-gathers DTensor shards (call on every process)."""
    out = {}
    for name, layer in bone_layers(model):
        out[name] = full(layer.bone_block.detach()).cpu()
    return out


def save_adapter(model: nn.Module, path: Path, is_main: bool) -> None:
    """`bone.save` of the full adapter at `path` (main process writes); collective when sharded."""
    if not is_sharded(model):
        if is_main:
            save(model, path)
        return
    blocks = full_blocks(model)
    if is_main:
        save(model, path, blocks=blocks)


def load_blocks(model: nn.Module, adapter_dir: Path) -> None:
    """Copy saved adapter blocks into a model that `bone.apply` prepared with the same config;
    sharded blocks take their own rows of the saved full block (every process reads the file)."""
    from torch.distributed.tensor import distribute_tensor

    _, blocks, _ = read_adapter(adapter_dir)
    layers = dict(bone_layers(model))
    if set(blocks) != set(layers):
        missing, extra = sorted(set(layers) - set(blocks)), sorted(set(blocks) - set(layers))
        raise ValueError(f"checkpoint {adapter_dir} does not fit this model: missing {missing[:4]}, unexpected {extra[:4]}")
    with torch.no_grad():
        for name, layer in layers.items():
            p, full = layer.bone_block, blocks[name]
            if tuple(full.shape) != tuple(p.shape):
                raise ValueError(f"checkpoint {adapter_dir}: block {name} has shape {tuple(full.shape)}, model has {tuple(p.shape)}")
            if _is_dtensor(p):
                full = distribute_tensor(full.to(p.device, p.dtype), p.device_mesh, p.placements, src_data_rank=None)
            p.copy_(full)


def optimizer_state(model: nn.Module, optimizer) -> dict:
    """The optimizer's state dict; for a sharded model the full (gathered) one, keyed by parameter
    name, on the main process (collective). Unsharded: plain `optimizer.state_dict()`."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _keyed_by_name(model: nn.Module, optimizer, state: dict) -> dict:
    """`state` with its parameter ids (plain `optimizer.state_dict()`) replaced by parameter names,
    the keys `get_optimizer_state_dict` writes; a state already keyed by name is returned as is."""
    saved_ids = [i for g in state["param_groups"] for i in g["params"]]
    if all(isinstance(i, str) for i in saved_ids):
        return state
    names = {p: n.replace("_checkpoint_wrapped_module.", "") for n, p in model.named_parameters()}
    current = [names[p] for g in optimizer.param_groups for p in g["params"]]
    if len(current) != len(saved_ids):
        raise ValueError(f"optimizer state holds {len(saved_ids)} parameters, this model trains {len(current)}")
    by_id = dict(zip(saved_ids, current))
    return {"state": {by_id[i]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [by_id[i] for i in g["params"]]} for g in state["param_groups"]]}


def load_optimizer_state(model: nn.Module, optimizer, state: dict) -> None:
    """Inverse of `optimizer_state`; every process passes the full state read from the checkpoint.
    Either layout (by id from unsharded runs, by name from FSDP runs) loads into either kind of run."""
    by_name = any(isinstance(i, str) for g in state["param_groups"] for i in g["params"])
    if not is_sharded(model) and not by_name:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    full_state = _keyed_by_name(model, optimizer, state)
    set_optimizer_state_dict(model, optimizer, full_state, options=StateDictOptions(full_state_dict=True))
