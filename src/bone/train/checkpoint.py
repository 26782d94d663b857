"""Training checkpoints: written to a hidden temporary folder, then renamed into place.

A checkpoint folder `checkpoints/step-000040/` holds
  adapter/          a bone.save directory (PEFT-loadable)
  optimizer.pt      AdamW state dict (keyed by parameter name when written by FSDP processes)
  scheduler.pt      LR scheduler state dict
  rng-rank{R}.pt    python / numpy / torch RNG states of process R
  state.json        step, epoch, step within the epoch, tokens seen, global batch, world size
  config.yaml       the run's TrainConfig
A kill at any moment leaves only complete `step-*` folders (temporary ones start with '.').
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

STEP_PREFIX = "step-"


def step_dir(root: Path, step: int) -> Path:
    return root / f"{STEP_PREFIX}{step:06d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX) and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def latest(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


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


def begin(root: Path, step: int) -> Path:
    """Create (empty) the temporary folder for the checkpoint of `step`; main process only."""
    tmp = root / f".{STEP_PREFIX}{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rank(tmp: Path, rank: int) -> None:
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")


def write_main(tmp: Path, optimizer_state: dict, scheduler, state: dict, config_yaml: str) -> None:
    """The files every process shares besides the adapter (see sharded.save_adapter): optimizer
    state (already gathered when sharded), scheduler, position, config."""
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / "config.yaml").write_text(config_yaml)
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")


def commit(tmp: Path, root: Path, step: int, keep: int) -> Path:
    """Rename the finished temporary folder into place and drop step checkpoints beyond `keep`."""
    final = step_dir(root, step)
    if final.exists():  # the same step saved again (a resumed run that was already at its end)
        old = final.with_name(f".{final.name}.old")
        final.replace(old)
        tmp.replace(final)
        shutil.rmtree(old)
    else:
        tmp.replace(final)
    for stale in list_checkpoints(root)[:-keep]:
        shutil.rmtree(stale)
    return final


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / "state.json").read_text())


def load_rank(ckpt: Path, rank: int) -> dict:
    """The RNG state of process `rank` (checked to exist: the process count must match)."""
    f = ckpt / f"rng-rank{rank}.pt"
    if not f.is_file():
        raise FileNotFoundError(f"{f} is missing: resume with the number of processes the checkpoint was saved with")
    return torch.load(f, weights_only=True)


def load_torch(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")
