"""FSDP2 on 2 CPU processes (gloo): checkpoints gather the sharded adapter blocks and AdamW state
into the single-process layout, resuming scatters them back, and the result matches 1 process at
the same global batch. The worker shards with torch's `fully_shard` itself; the gather / save /
restore code is bone.train.sharded, the same the trainer calls under an Accelerate FSDP2 launch
(test_accelerate_fsdp.py runs that launch end to end)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


SRC = str(Path(__file__).parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU processes
WORKER = str(Path(__file__).with_name("fsdp_worker.py"))
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")


def worker(*args, launcher=()):
    r = subprocess.run([sys.executable, *launcher, WORKER, *map(str, args)], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def grad_norms(stdout: str) -> list[float]:
    return [float(ln.split()[-1]) for ln in stdout.splitlines() if ln.startswith("step ")]


@pytest.mark.integration
def test_fsdp_two_processes_checkpoint_resume_match_one_process(model_dir, tmp_path):
    one = worker(model_dir, tmp_path / "one", "--steps", 4)
    first = worker(model_dir, tmp_path / "two", "--steps", 2, launcher=TORCHRUN)
    rest = worker(model_dir, tmp_path / "two4", "--steps", 4, "--first", 2, "--resume", tmp_path / "two", launcher=TORCHRUN)
    assert grad_norms(first) + grad_norms(rest) == pytest.approx(grad_norms(one), rel=1e-5)
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two4" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    scale = max(v.abs().max().item() for v in a.values())
    print(f"FSDP 2-process (resumed at step 2) vs 1-process adapter: max |diff| = {diff:.3e} (max |block| = {scale:.3e})")
    assert scale > 1e-3 and diff < 1e-5
    o1 = torch.load(tmp_path / "one" / "optimizer.pt", weights_only=True)["state"]
    o2 = torch.load(tmp_path / "two4" / "optimizer.pt", weights_only=True)["state"]
    assert len(o2) == len(a) and all(k.endswith(".bone_adapters.default.block") for k in o2)
    for s1, s2 in zip((o1[i] for i in sorted(o1)), o2.values()):  # both in module order
        assert float(s1["step"]) == float(s2["step"]) == 4.0
        for m in ("exp_avg", "exp_avg_sq"):
            assert s1[m].shape == s2[m].shape
            # elementwise against the tensor's scale: 2 processes sum in another order
            torch.testing.assert_close(s2[m], s1[m], rtol=1e-4, atol=1e-5 * s1[m].abs().max().item())


@pytest.mark.integration
def test_checkpoints_resume_across_fsdp_and_single_process(model_dir, tmp_path):
    """An FSDP checkpoint (optimizer keyed by name) resumes in 1 process, and a 1-process one
    (keyed by id) under FSDP; both end where 4 uninterrupted single-process steps end."""
    worker(model_dir, tmp_path / "one", "--steps", 4)
    worker(model_dir, tmp_path / "one2", "--steps", 2)
    worker(model_dir, tmp_path / "two2", "--steps", 2, launcher=TORCHRUN)
    worker(model_dir, tmp_path / "to_fsdp", "--steps", 4, "--first", 2, "--resume", tmp_path / "one2", launcher=TORCHRUN)
    worker(model_dir, tmp_path / "to_one", "--steps", 4, "--first", 2, "--resume", tmp_path / "two2")
    ref = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    for run in ("to_fsdp", "to_one"):
        got = load_file(tmp_path / run / "adapter" / "adapter_model.safetensors")
        assert max((ref[k] - got[k]).abs().max().item() for k in ref) < 1e-5, run


@pytest.mark.integration
def test_fsdp_gathers_and_scatters_trained_parts(model_dir, tmp_path):
    """Trained parts (the layer norms, sharded by FSDP2 like every parameter) in their own AdamW group:
    2 processes, interrupted and resumed, end where 1 process ends; the saved parts are whole."""
    parts = ("--parts", "norm")
    one = worker(model_dir, tmp_path / "one", "--steps", 4, *parts)
    worker(model_dir, tmp_path / "two", "--steps", 2, *parts, launcher=TORCHRUN)
    rest = worker(model_dir, tmp_path / "two4", "--steps", 4, "--first", 2, "--resume", tmp_path / "two", *parts,
                  launcher=TORCHRUN)
    assert grad_norms(rest) == pytest.approx(grad_norms(one)[2:], rel=1e-5)
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two4" / "adapter" / "adapter_model.safetensors")
    norms = [k for k in a if k.endswith("norm.weight")]
    assert len(norms) == 5 and a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    base = load_file(model_dir / "model.safetensors")
    assert all(not torch.equal(a[k], base[k.removeprefix("base_model.model.")]) for k in norms)  # trained
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    o1 = torch.load(tmp_path / "one" / "optimizer.pt", weights_only=True)
    o2 = torch.load(tmp_path / "two4" / "optimizer.pt", weights_only=True)
    assert [g["lr"] for g in o2["param_groups"]] == [1e-3, 3e-4]
    assert sorted(o2["param_groups"][1]["names"]) == sorted(k.removeprefix("base_model.model.") for k in norms)
    s1 = dict(zip([n for g in o1["param_groups"] for n in g["names"]], [o1["state"][i] for g in o1["param_groups"] for i in g["params"]]))
    for name, s2 in o2["state"].items():
        for m in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(s2[m], s1[name][m], rtol=1e-4, atol=1e-5 * s1[name][m].abs().max().item())
