"""Fixtures for the training tests: one tiny Llama folder shared by every test, and what a\nmulti-process run that diverges must end with."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import tiny  # noqa: E402


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return tiny.make_model_dir(tmp_path_factory.mktemp("tiny-llama"))


def _stopped_everywhere(result, run: Path, processes: int = 2) -> None:
    """A multi-process run that diverged at step 2: every process stopped (non-zero exit), the main process
    printed the one line once, the newest checkpoint is step 1 (finite), no adapter, metrics strict JSON."""
    def refuse(token):
        raise ValueError(token)

    assert result.returncode != 0, result.stdout[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if "bone train: error:" in ln]
    assert len(lines) == 1 and lines[0].startswith("bone train: error: step 2: the training loss is nan"), result.stderr[-3000:]
    assert f"newest checkpoint: {run / 'checkpoints' / 'step-000001'}" in lines[0]
    (ckpt,) = (run / "checkpoints").iterdir()
    assert ckpt.name == "step-000001" and {f"rng-rank{r}.pt" for r in range(processes)} <= {p.name for p in ckpt.iterdir()}
    assert all(torch.isfinite(t).all() for t in load_file(ckpt / "adapter" / "adapter_model.safetensors").values())
    assert not (run / "adapter").exists()
    rows = [json.loads(ln, parse_constant=refuse) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1]


@pytest.fixture
def divergence():
    """.overrides: a 2-process run (batch 2 each) whose loss is NaN from step 2 (lr 1e37), a checkpoint
    every step; .check(completed_process, run_dir): how it must end."""
    return SimpleNamespace(overrides={"optim.lr": 1e37, "checkpointing.every": 1, "schedule.batch_size": 2},
                           check=_stopped_everywhere)
