"""`bone train` under a real `accelerate launch` with an FSDP2 config, on 2 CPU processes (gloo).

Accelerate's own launcher, FullyShardedDataParallelPlugin (from the config's FSDP_* variables),
`Accelerator.prepare` -> `fsdp2_prepare_model`, `no_sync` (grad_accum 2), `clip_grad_norm_`,
`unwrap_model` and `reduce` all run; the only help is accelerate_cpu_fsdp.py, which lets
Accelerate pick FSDP for a CPU process group (it reserves FSDP for GPU-like devices)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tiny import overrides

SRC = str(Path(__file__).parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU processes
SHIM = str(Path(__file__).with_name("accelerate_cpu_fsdp.py"))

SHIPPED = Path(__file__).parents[2] / "configs" / "accelerate-4gpu-fsdp2.yaml"


def fsdp2_config(path: Path) -> Path:
    """The shipped FSDP2 launch config, on 2 processes, any free port. It keeps its mixed_precision: bf16,
    which bone ignores with a note (schedule.precision, fp32 here as in the 1-process reference, decides)."""
    cfg = yaml.safe_load(SHIPPED.read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_version"] == 2 and cfg["mixed_precision"] == "bf16"
    cfg.update(num_processes=2, main_process_port=0)
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(cmd: list, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *map(str, cmd)], env=ENV, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


@pytest.mark.integration
def test_accelerate_fsdp2_launch_resumed_matches_one_process(model_dir, tmp_path):
    config = fsdp2_config(tmp_path / "fsdp2.yaml")
    one, two = tmp_path / "one", tmp_path / "fsdp"
    run(["-m", "bone", "train", *overrides(model_dir, one, **{"schedule.max_steps": 4, "schedule.batch_size": 4})])
    args = overrides(model_dir, two, **{"schedule.max_steps": 4, "schedule.batch_size": 1, "schedule.grad_accum": 2})
    launch = ["-m", "accelerate.commands.launch", "--config_file", config, SHIM, "train", *args]
    first = run([*launch, "--stop-at", "2"])
    assert "global batch 4 on 2 process(es), FSDP2, model partitioned)" in first.stdout and "stopped by stop_at=2 after step 2" in first.stdout
    assert "mixed_precision=bf16 is not used: bone's schedule.precision (fp32) decides" in first.stdout
    rest = run([*launch, "--resume"])
    assert "resuming at step 2" in rest.stdout

    # (a) it was FSDP2: the checkpoint's AdamW state went through get_optimizer_state_dict, which only
    # sharded.optimizer_state calls when the adapter blocks are DTensors; it keys the state by
    # parameter name, where an unsharded (DDP or 1-process) run writes integer ids
    for step in (2, 4):
        state = torch.load(two / "checkpoints" / f"step-{step:06d}" / "optimizer.pt", weights_only=True)["state"]
        assert all(isinstance(k, str) and k.endswith(".bone_adapters.default.block") for k in state), list(state)[:3]
    ref_opt = torch.load(one / "checkpoints" / "step-000004" / "optimizer.pt", weights_only=True)["state"]
    assert all(isinstance(k, int) for k in ref_opt)

    # (b) interrupted + resumed FSDP2 ends where one uninterrupted process ends, at global batch 4
    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (one, two))
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape and b[k].dtype == torch.float32 for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    scale = max(v.abs().max().item() for v in a.values())
    print(f"accelerate FSDP2 2-process (stopped at 2, resumed) vs 1-process adapter: max |diff| = {diff:.3e} "
          f"(max |block| = {scale:.3e})")
    assert scale > 1e-3 and diff < 1e-5
    rows = [[json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [r["step"] for r in rows[1]] == [1, 2, 3, 4]
    for key in ("loss", "grad_norm"):  # grad_norm: Accelerate's clip_grad_norm_ over DTensor gradients
        assert [r[key] for r in rows[1]] == pytest.approx([r[key] for r in rows[0]], rel=1e-5)
    assert len(state) == len(ref_opt) == 14
    for s1, s2 in zip((ref_opt[i] for i in sorted(ref_opt)), state.values()):  # both in module order
        assert float(s1["step"]) == float(s2["step"]) == 4.0
        for m in ("exp_avg", "exp_avg_sq"):
            # elementwise against the tensor's scale: 2 processes sum in another order
            torch.testing.assert_close(s2[m], s1[m], rtol=1e-4, atol=1e-5 * s1[m].abs().max().item())

    # (c) same checkpoint and adapter layout as the single-process run (plus rank 1's RNG state)
    c1, c2 = one / "checkpoints" / "step-000004", two / "checkpoints" / "step-000004"
    assert files(c2) == sorted(files(c1) + ["rng-rank1.pt"])
    assert files(two / "adapter") == files(one / "adapter")
    assert json.loads((c2 / "state.json").read_text())["world_size"] == 2
    for name in ("adapter_config.json", "bone_config.json"):
        assert (c1 / "adapter" / name).read_text() == (c2 / "adapter" / name).read_text()


@pytest.mark.integration
def test_fsdp2_processes_stop_together_at_a_non_finite_step(model_dir, tmp_path, divergence):
    run = tmp_path / "run"
    launch = ["-m", "accelerate.commands.launch", "--config_file", fsdp2_config(tmp_path / "fsdp2.yaml"), SHIM, "train",
              *overrides(model_dir, run, **divergence.overrides)]
    r = subprocess.run([sys.executable, *map(str, launch)], env=ENV, capture_output=True, text=True, timeout=300)
    divergence.check(r, run)
