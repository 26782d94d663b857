"""Real processes: 2-process CPU training (gloo) matches 1 process at the same global batch, and
SIGINT / SIGTERM stop a run cleanly with a checkpoint that --resume continues."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny import overrides

SRC = str(Path(__file__).parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU processes


def bone_train(*args, launcher=(), timeout=300):
    cmd = [sys.executable, *launcher, "-m", "bone", "train", *map(str, args)]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.integration
def test_two_processes_match_one_at_equal_global_batch(model_dir, tmp_path):
    common = {"schedule.max_steps": 4, "bone.variant": "col"}
    one = bone_train(*overrides(model_dir, tmp_path / "one", **common, **{"schedule.batch_size": 4}))
    assert one.returncode == 0, one.stderr[-2000:]
    two = bone_train(*overrides(model_dir, tmp_path / "two", **common, **{"schedule.batch_size": 2}),
                     launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert "global batch 4 on 2 process(es)" in two.stdout
    a, b = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors"), load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    scale = max(a[k].abs().max().item() for k in a)
    print(f"2-process vs 1-process adapter: max |diff| = {diff:.3e} (max |block| = {scale:.3e})")
    assert scale > 1e-3 and diff < 1e-5
    losses = [[json.loads(ln)["loss"] for ln in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "step-000004").iterdir() if p.name.startswith("rng")) == \
        ["rng-rank0.pt", "rng-rank1.pt"]


@pytest.mark.integration
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_resume_finishes(model_dir, tmp_path, sig, code):
    out = tmp_path / "run"
    args = overrides(model_dir, out, **{"schedule.max_steps": 40, "schedule.epochs": 10, "checkpointing.every": 1000})
    proc = subprocess.Popen([sys.executable, "-m", "bone", "train", *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-2000:]
    assert f"stopped by {signal.Signals(sig).name}" in stdout and "Traceback" not in stderr
    (ckpt,) = (out / "checkpoints").iterdir()
    step = json.loads((ckpt / "state.json").read_text())["step"]
    assert 2 <= step < 40 and not (out / "adapter").exists()
    assert torch.load(ckpt / "rng-rank0.pt", weights_only=True)["torch"].dtype == torch.uint8
    done = bone_train(*args, "--resume", out, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming at step {step}" in done.stdout
    rows = [json.loads(ln)["step"] for ln in metrics.read_text().splitlines()]
    assert rows == list(range(1, 41)) and (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.integration
def test_two_processes_stop_together_at_a_non_finite_step(model_dir, tmp_path, divergence):
    run = tmp_path / "run"
    r = bone_train(*overrides(model_dir, run, **divergence.overrides),
                   launcher=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"))
    divergence.check(r, run)


@pytest.mark.integration
def test_a_full_disk_stops_every_process_with_one_line(model_dir, small_disk):
    """The checkpoint of step 4 fails on a full disk: no process is left waiting for the others, the main
    process names the file once, the checkpoint of step 2 is intact and no temporary is left."""
    disk = small_disk(768)
    run = disk.path / "run"
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    args = overrides(model_dir, run, **{"schedule.batch_size": 2})
    first = bone_train(*args, "--stop-at", 2, launcher=torchrun)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()}
    disk.fill(leave=8 << 10)
    r = bone_train(*args, "--resume", launcher=torchrun)
    lines = [ln for ln in r.stderr.splitlines() if "bone train: error:" in ln]
    assert r.returncode != 0 and len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith(f"bone train: error: No space left on device: '{run / 'checkpoints' / 'step-000004'}/")
    assert {p: p.read_bytes() for p in (run / "checkpoints").rglob("*") if p.is_file()} == before
    assert not [p for p in disk.path.rglob(".*") if ".tmp-" in p.name]
