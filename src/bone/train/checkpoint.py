"""Training checkpoints: built in a temporary folder (`bone.fs.make_temp_dir`), then renamed into place.

A checkpoint folder (`RunDir.step(N)`, e.g. `checkpoints/step-000040/`) holds
  adapter/          the method's saved result (Bone: a bone.save directory, PEFT-loadable)
  optimizer.pt      AdamW state dict (keyed by parameter name when written by sharded processes)
  scheduler.pt      LR scheduler state dict
  rng-rank{R}.pt    python / numpy / torch RNG states of process R
  config.yaml       the run's TrainConfig
  state.json        step, epoch, step within the epoch, tokens seen, global batch, world size
A kill at any moment leaves only complete `step-*` folders (temporaries start with '.', and the
next checkpoint of that step removes those of dead writers).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import fs
from ..errors import MissingPathError
from .rundir import CONFIG, STATE, RunDir

ADAPTER, OPTIMIZER, SCHEDULER = "adapter", "optimizer.pt", "scheduler.pt"


def rng_state() -> dict:
    """Every RNG the training loop touches, in a form `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, g = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, g))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save(obj, path: Path) -> None:
    fs.atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _rng_file(ckpt: Path, rank: int) -> Path:
    return ckpt / f"rng-rank{rank}.pt"


def begin(run: RunDir, step: int) -> Path:
    """Create the (empty) temporary folder for the checkpoint of `step`; main process only."""
    return fs.make_temp_dir(run.step(step))


def write_rank(tmp: Path, rank: int) -> None:
    _save(rng_state(), _rng_file(tmp, rank))


def write_main(tmp: Path, optimizer_state: dict, scheduler, state: dict, config_yaml: str) -> None:
    """The files every process shares besides the adapter (see sharded.save_trained): optimizer
    state (already gathered when sharded), scheduler, config, and last the position (state.json)."""
    _save(optimizer_state, tmp / OPTIMIZER)
    _save(scheduler.state_dict(), tmp / SCHEDULER)
    fs.write_text(tmp / CONFIG, config_yaml)
    fs.write_json(tmp / STATE, state)


def commit(tmp: Path, run: RunDir, step: int, keep: int) -> Path:
    """Rename the finished temporary folder into place (replacing a checkpoint of the same step, as a
    resumed run that was already at its end writes) and drop step checkpoints beyond `keep`."""
    final = fs.replace_dir(tmp, run.step(step))
    for stale in run.list_checkpoints()[:-keep]:
        shutil.rmtree(stale)
    return final


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE).read_text())


def load_rank(ckpt: Path, rank: int) -> dict:
    """The RNG state of process `rank` (checked to exist: the process count must match)."""
    f = _rng_file(ckpt, rank)
    if not f.is_file():
        raise MissingPathError(f"{f} is missing: resume with the number of processes the checkpoint was saved with")
    return torch.load(f, weights_only=True)


def load_torch(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")
