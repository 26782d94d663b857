"""Training checkpoints: built in a temporary folder (`bone.fs.make_temp_dir`), then renamed into place.

A checkpoint folder (`RunDir.step(N)`, e.g. `checkpoints/step-000040/`) holds
  adapter/          the method's saved result (Bone: a bone.save directory, PEFT-loadable)
  optimizer.pt      AdamW state dict (keyed by parameter name when written by sharded processes)
  scheduler.pt      LR scheduler state dict
  rng-rank{R}.pt    python / numpy / torch RNG states of process R
  config.yaml       the run's TrainConfig
  state.json        step, epoch, step within the epoch, tokens seen, global batch, world size
A kill at any moment leaves only complete `step-*` folders (temporaries start with '.'; the next run
in that folder removes those of dead writers, `RunDir.remove_stale`). A write that fails (a full disk)
removes its temporary folder, and the error names the file of the checkpoint it was writing. Files
that fail to read back (truncated, damaged) are a CorruptFileError naming the file.
"""
from __future__ import annotations

import errno
import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from .. import fs
from ..errors import ConfigError, CorruptFileError, MissingPathError
from .config import TrainConfig, load_config
from .rundir import CONFIG, STATE, RunDir, checkpoints_in

ADAPTER, OPTIMIZER, SCHEDULER = "adapter", "optimizer.pt", "scheduler.pt"
STATE_KEYS = ("step", "epoch", "pos", "tokens", "global_batch")  # ints every state.json holds
RNG_KEYS, OPTIMIZER_KEYS, SCHEDULER_KEYS = ("python", "numpy", "torch"), ("state", "param_groups"), ("last_epoch",)


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


def _rng_file(ckpt: Path, rank: int) -> Path:
    return ckpt / f"rng-rank{rank}.pt"


def begin(run: RunDir, step: int) -> Path:
    """Create the (empty) temporary folder for the checkpoint of `step`; main process only."""
    return fs.make_temp_dir(run.step(step))


def write_rank(tmp: Path, rank: int) -> None:
    fs.save_torch(rng_state(), _rng_file(tmp, rank))


def write_main(tmp: Path, optimizer_state: dict, scheduler, state: dict, config_yaml: str) -> None:
    """The files every process shares besides the adapter (see sharded.save_trained): optimizer
    state (already gathered when sharded), scheduler, config, and last the position (state.json)."""
    fs.save_torch(optimizer_state, tmp / OPTIMIZER)
    fs.save_torch(scheduler.state_dict(), tmp / SCHEDULER)
    fs.write_text(tmp / CONFIG, config_yaml)
    fs.write_json(tmp / STATE, state)


def commit(tmp: Path, run: RunDir, step: int, keep: int) -> Path:
    """Rename the finished temporary folder into place (replacing a checkpoint of the same step, as a
    resumed run that was already at its end writes) and drop step checkpoints beyond `keep`."""
    final = fs.replace_dir(tmp, run.step(step))
    for stale in run.list_checkpoints()[:-keep]:
        shutil.rmtree(stale)
    return final


def corrupt(file: Path, why: str) -> CorruptFileError:
    """The error for a checkpoint file that cannot be read back, with what to do instead."""
    ckpt = file.parent
    earlier = [c for c in checkpoints_in(ckpt.parent) if c.resolve() != ckpt.resolve()]
    other = f"resume from an earlier checkpoint (--resume {earlier[-1]}) or start again" if earlier else "start again"
    return CorruptFileError(f"{file} is truncated or corrupt ({why}): {other} with --overwrite")


def read_state(ckpt: Path) -> dict:
    f = ckpt / STATE
    try:
        state = json.loads(f.read_bytes())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise corrupt(f, str(err)) from None
    if not isinstance(state, dict) or not all(type(state.get(k)) is int for k in STATE_KEYS):
        raise corrupt(f, f"it must be a JSON object with the integers {list(STATE_KEYS)}")
    return state


def read_resumable(ckpt: Path, cfg: TrainConfig, global_batch: int) -> dict:
    """The state of checkpoint `ckpt` after checking that a run with `cfg` and `global_batch` may continue it."""
    a, b = load_config(ckpt / CONFIG).run_defining(), cfg.run_defining()
    if a != b:
        diff = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k]]
        raise ConfigError(f"cannot resume {ckpt}: the config differs from the checkpoint's in {diff}")
    state = read_state(ckpt)
    if state["global_batch"] != global_batch:
        raise ConfigError(f"cannot resume {ckpt}: global batch {state['global_batch']} was saved, this launch has "
                          f"{global_batch} (same batch_size x grad_accum x processes needed)")
    return state


def load_rank(ckpt: Path, rank: int) -> dict:
    """The RNG state of process `rank` (checked to exist: the process count must match)."""
    f = _rng_file(ckpt, rank)
    if not f.is_file():
        raise MissingPathError(f"{f} is missing: resume with the number of processes the checkpoint was saved with")
    return load_torch(f, RNG_KEYS)


def load_torch(path: Path, keys: tuple[str, ...]) -> dict:
    """A dict saved by `fs.save_torch`, checked to hold `keys`; a file that does not load is a CorruptFileError."""
    if not path.is_file():
        raise MissingPathError(f"{path} is missing: the checkpoint {path.parent} is incomplete")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except OSError as err:  # the zip reader on a truncated file: EINVAL; a permission error stays what it is
        if err.errno not in (None, errno.EINVAL):
            raise
        raise corrupt(path, f"{type(err).__name__}: {err.strerror or err}") from None
    except (RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:  # truncated, damaged
        raise corrupt(path, f"{type(err).__name__}: {str(err).split('. ')[0][:120] or 'no data'}") from None
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        raise corrupt(path, f"it does not hold {list(keys)}")
    return obj
