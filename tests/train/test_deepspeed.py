"""DeepSpeed ZeRO through the real `accelerate launch` on 2 CPU processes (DeepSpeed's CPU
accelerator over gloo): ZeRO-3 with every parameter partitioned, interrupted and resumed, ends
where one uninterrupted process ends; checkpoints have the single-process layout and resume across
kinds of launch (ZeRO -> 1 process, 1 process -> ZeRO-2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny import overrides

pytest.importorskip("deepspeed")

SRC = str(Path(__file__).parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU processes
BLOCKS = "adapter/adapter_model.safetensors"
COMMON = {"schedule.max_steps": 4, "bone.variant": "col"}  # clipping at 1.0 is active (grad norms ~1.6)


def launch_config(tmp_path: Path, stage: int) -> Path:
    """An Accelerate config for 2 processes; ZeRO-3 through a DeepSpeed JSON that partitions even
    the tiny adapter blocks (persistence threshold 0), as a 7B model's blocks would be."""
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
          "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0}}
    (tmp_path / f"zero{stage}.json").write_text(json.dumps(ds))
    cfg = tmp_path / f"zero{stage}.yaml"
    cfg.write_text(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: {tmp_path / f'zero{stage}.json'}\n"
                   "  zero3_init_flag: false\nnum_machines: 1\nnum_processes: 2\nmachine_rank: 0\nuse_cpu: false\n")
    return cfg


def bone_train(*args, accelerate_config=None):
    launcher = ("-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)) if accelerate_config else ()
    r = subprocess.run([sys.executable, *launcher, "-m", "bone", "train", *map(str, args)], env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r.stdout


def same_steps(reference: Path, run: Path) -> None:
    """Per-step loss, lr and grad norm (after clipping is applied: norms ~1.6 > max_grad_norm 1.0) of
    `run` equal the reference's at the same steps."""
    rows = lambda d: {r["step"]: r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())}  # noqa: E731
    ref, got = rows(reference), rows(run)
    assert got and set(got) <= set(ref)
    for step, r in got.items():
        for key in ("loss", "lr", "grad_norm"):
            assert r[key] == pytest.approx(ref[step][key], rel=1e-5), (step, key)
    assert min(r["grad_norm"] for r in ref.values()) > 1.0


def max_diff(a: Path, b: Path) -> float:
    x, y = load_file(a / BLOCKS), load_file(b / BLOCKS)
    assert x.keys() == y.keys() and max(v.abs().max().item() for v in x.values()) > 1e-3
    return max((x[k] - y[k]).abs().max().item() for k in x)


@pytest.mark.integration
def test_zero3_resumed_and_cross_launch_resumes_match_one_process(model_dir, tmp_path):
    one = tmp_path / "one"
    bone_train(*overrides(model_dir, one, **COMMON, **{"schedule.batch_size": 4}))
    zero3 = launch_config(tmp_path, 3)
    z = tmp_path / "z3"
    split = {**COMMON, "schedule.batch_size": 1, "schedule.grad_accum": 2}  # global batch 4 = 2 processes x 1 x 2
    out = bone_train(*overrides(model_dir, z, **split), "--stop-at", 2, accelerate_config=zero3)
    assert "global batch 4 on 2 process(es), DeepSpeed ZeRO-3, model partitioned" in out
    assert "8,192 trainable parameters" in out  # counted from ZeRO-3's partitioned blocks
    out = bone_train(*overrides(model_dir, z, **split), "--resume", accelerate_config=zero3)
    assert f"resuming at step 2 from {z / 'checkpoints' / 'step-000002'}" in out
    same_steps(one, z)
    diff = max_diff(one, z)
    print(f"ZeRO-3, 2 processes, stopped at step 2 and resumed, vs 1 process: adapter max |diff| = {diff:.2e}")
    assert diff < 1e-5

    ckpt = z / "checkpoints" / "step-000004"
    ours, ref = (torch.load(d / "optimizer.pt", weights_only=True) for d in (ckpt, one / "checkpoints" / "step-000004"))
    assert list(ours["state"]) == [f"{n}.bone_adapters.default.block" for n in module_order(model_dir, one)]  # by name, in order
    assert len(ours["state"]) == len(ref["state"]) == 14
    for s1, s2 in zip((ref["state"][i] for i in sorted(ref["state"])), ours["state"].values()):
        assert float(s2["step"]) == 4.0
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(s2[k], s1[k], rtol=1e-4, atol=1e-9)
    assert ours["param_groups"][0]["lr"] == pytest.approx(ref["param_groups"][0]["lr"])

    # a ZeRO-3 checkpoint resumes in one process, and a one-process checkpoint under ZeRO-2
    to_one = tmp_path / "to_one"
    out = bone_train(*overrides(model_dir, to_one, **COMMON, **{"schedule.batch_size": 4, "schedule.grad_accum": 1}),
                     "--resume", z / "checkpoints" / "step-000002")
    assert "saved by 2 process(es), this launch has 1" in out
    to_zero2 = tmp_path / "to_zero2"
    out = bone_train(*overrides(model_dir, to_zero2, **COMMON, **{"schedule.batch_size": 2}),
                     "--resume", one / "checkpoints" / "step-000002", accelerate_config=launch_config(tmp_path, 2))
    assert "DeepSpeed ZeRO-2)" in out
    for run in (to_one, to_zero2):
        same_steps(one, run)
        diff = max_diff(one, run)
        print(f"{run.name}: adapter max |diff| vs 1 process = {diff:.2e}")
        assert diff < 1e-5


def module_order(model_dir: Path, run: Path) -> list[str]:
    """The Bone layers' names in the model's module order (the order of the trainable parameters)."""
    from transformers import AutoModelForCausalLM

    import bone

    _, blocks, _ = bone.read_adapter(run / "adapter")
    return [n for n, _ in AutoModelForCausalLM.from_pretrained(model_dir).named_modules() if n in blocks]


@pytest.mark.integration
def test_zero3_processes_stop_together_at_a_non_finite_step(model_dir, tmp_path, divergence):
    """ZeRO-3 applies the update inside backward (it does not check it in fp32): bone's all-reduced loss
    still stops both processes before the step is saved."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_config(tmp_path, 3)),
           "-m", "bone", "train", *map(str, overrides(model_dir, run, **divergence.overrides))]
    divergence.check(subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600), run)


@pytest.mark.integration
def test_zero3_trains_parts_in_their_own_group_like_one_process(model_dir, tmp_path):
    """bone.train_parts (the layer norms, partitioned by ZeRO-3 like the blocks) at optim.parts_lr: a
    stopped and resumed 2-process run ends where 1 process ends, with the single-process layout."""
    parts = {**COMMON, "bone.train_parts": "[norm]", "optim.parts_lr": 3e-4}
    one, z, zero3 = tmp_path / "one", tmp_path / "z3", launch_config(tmp_path, 3)
    bone_train(*overrides(model_dir, one, **parts, **{"schedule.batch_size": 4}))
    split = {**parts, "schedule.batch_size": 1, "schedule.grad_accum": 2}
    bone_train(*overrides(model_dir, z, **split), "--stop-at", 2, accelerate_config=zero3)
    out = bone_train(*overrides(model_dir, z, **split), "--resume", accelerate_config=zero3)
    assert "+ parts ['norm']" in out and "DeepSpeed ZeRO-3" in out
    same_steps(one, z)
    diff = max_diff(one, z)  # blocks and the modules_to_save norms
    print(f"ZeRO-3 with trained parts, stopped and resumed, vs 1 process: adapter max |diff| = {diff:.2e}")
    assert diff < 1e-5 and sum(k.endswith("norm.weight") for k in load_file(z / BLOCKS)) == 5
    ours, ref = (torch.load(d / "checkpoints" / "step-000004" / "optimizer.pt", weights_only=True) for d in (z, one))
    assert [g["params"] for g in ours["param_groups"]] == [g["names"] for g in ref["param_groups"]]
    assert [g["lr"] for g in ours["param_groups"]] == pytest.approx([g["lr"] for g in ref["param_groups"]])
    names = [n for g in ref["param_groups"] for n in g["names"]]
    by_name = dict(zip(names, (ref["state"][i] for g in ref["param_groups"] for i in g["params"])))
    for name, s in ours["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(s[k], by_name[name][k], rtol=1e-4, atol=1e-9)
