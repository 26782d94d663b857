"""What the benchmark measures: step time, bytes kept for backward, peak RSS.

  step time      one training step (zero_grad, forward, causal-LM loss, backward, fused AdamW), wall
                 clock (perf_counter) and process CPU time (process_time, steadier when other
                 programs share the cores); methods interleaved round-robin in one process.
  kept bytes     every tensor autograd saves during one forward, recorded by
                 `torch.autograd.graph.saved_tensors_hooks`, summed over unique storages;
                 storages of model parameters (and of a quantized weight's state) are excluded
                 (they exist whether or not a backward follows), so a cloned, merged or
                 dequantized weight counts and the frozen W does not.
  peak RSS       VmHWM of a fresh process that builds one method and runs a few steps (the
                 children run first, while this process is still small).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Callable

import torch
from torch import nn

from .quant import state_tensors


class SavedLog:
    """Context manager recording the storages of tensors saved for backward inside it."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}  # data_ptr -> nbytes
        self.shapes: list[tuple[tuple[int, ...], int]] = []  # (shape, storage data_ptr) per saved tensor
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        self.storages[st.data_ptr()] = st.nbytes()
        self.shapes.append((tuple(t.shape), st.data_ptr()))
        return t

    def __enter__(self) -> "SavedLog":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    def bytes(self, exclude: set[int] = frozenset()) -> int:
        """Total bytes of the unique saved storages whose data_ptr is not in `exclude`."""
        return sum(n for ptr, n in self.storages.items() if ptr not in exclude)


def param_storages(model: nn.Module) -> set[int]:
    """Storages of the parameters and of the quantization state of quantized ones (`quant.state_tensors`)."""
    return {t.untyped_storage().data_ptr() for p in model.parameters() for t in (p, *state_tensors(p))}


def loss_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss


def kept_bytes(model: nn.Module, ids: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward (parameters excluded)."""
    with SavedLog() as log:
        loss = loss_of(model, ids)
    n = log.bytes(param_storages(model))
    del loss
    return n


def optimizer(params: list[nn.Parameter]) -> torch.optim.AdamW:
    """AdamW over `params`: torch's fused one where it takes them, as `bone train` (optim.fused) and
    transformers.Trainer (optim "adamw_torch_fused") use by default, so every method's step pays the
    optimizer a user's run pays."""
    from ..train.optim import fuses

    return torch.optim.AdamW(params, lr=1e-4, fused=fuses(params) or None)


def stepper(model: nn.Module, params: list[nn.Parameter], ids: torch.Tensor) -> Callable[[], None]:
    """One training step of `model` on `ids` (`optimizer(params)`, skipped when there are none)."""
    opt = optimizer(params) if params else None

    def step() -> None:
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        loss_of(model, ids).backward()
        if opt is not None:
            opt.step()

    return step


def time_interleaved(steps: dict[str, Callable[[], None]], repeats: int, warmup: int):
    """Wall and process-CPU seconds per step for each method: `warmup` untimed rounds, then
    `repeats` timed rounds, each running every method once in turn (so drifting machine load
    hits all alike). Returns (wall, cpu), each {method: [seconds per round]}."""
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            if i >= warmup:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    return wall, cpu


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB: VmHWM from /proc (reset by exec), else
    ru_maxrss (which on Linux survives exec, so a child would report its parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def child_peak_rss(method: str, argv: list[str], timeout: float = 600) -> float:
    """Peak RSS (MiB) of a fresh `python -m bone.bench --rss-child METHOD ...` process."""
    cmd = [sys.executable, "-m", "bone.bench", *argv, "--rss-child", method]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench: RSS child for {method} failed:\n{proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def load_average() -> float:
    """The 1-minute load average (how busy the machine was; 0.0 where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0
