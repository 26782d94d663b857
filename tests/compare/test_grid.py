"""The grid runner: every cell an ordinary bone train run; a rerun skips finished runs, resumes an
interrupted one from its checkpoint (exactly) and restarts one that died before its first checkpoint;
the test split is evaluated only at each arm's picked learning rate."""
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

from bone import compare
from bone.compare.config import run_config
from bone.train.trainer import Trainer
from tiny import compare_config, compare_overrides

WEIGHTS = "adapter/adapter_model.safetensors"


def sessions(run: Path) -> list[int]:
    return [json.loads(ln)["steps"] for ln in (run / "timing.jsonl").read_text().splitlines()]


def test_a_rerun_skips_finished_runs_and_resumes_an_interrupted_one(model_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    assert compare.run(compare_config(model_dir, out, methods="[col]")) == 0  # a first grid: col only
    col = out / "col" / "lr-0.001" / "seed-0"
    stamp = (col / WEIGHTS).stat().st_mtime_ns
    assert sessions(col) == [4] and not (col / "checkpoints").exists()  # finished runs drop their checkpoints

    cfg = compare_config(model_dir, out)  # the grid grows by an arm: allowed, its runs are checked one by one
    killed, dead = out / "lora" / "lr-0.001" / "seed-0", out / "lora" / "lr-0.003" / "seed-0"
    assert Trainer(run_config(cfg, "lora", 1e-3, 0)).setup().train(stop_at=2) == 0  # as a kill after a checkpoint leaves it
    Trainer(run_config(cfg, "lora", 3e-3, 0)).setup()  # a run killed before its first checkpoint: config.yaml only
    assert sorted(p.name for p in dead.iterdir()) == ["config.yaml"]
    capsys.readouterr()

    assert compare.run(cfg) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier, skipped") == 2 and "resuming at step 2" in printed
    assert (col / WEIGHTS).stat().st_mtime_ns == stamp and sessions(col) == [4]
    assert sessions(killed) == [2] and sessions(dead) == [4]  # the grid trained only the 2 steps left
    reference = tmp_path / "uninterrupted"
    Trainer(run_config(compare_config(model_dir, reference), "lora", 1e-3, 0)).setup().run()
    a, b = load_file(killed / WEIGHTS), load_file(reference / "lora" / "lr-0.001" / "seed-0" / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # resumed exactly

    report = json.loads((out / "compare.json").read_text())
    for arm in ("col", "lora"):
        tested = sorted(p.parents[3].name for p in (out / arm).glob("lr-*/seed-*/eval/test/results.json"))
        assert tested == [f"lr-{report['arms'][arm]['lr']:g}"]  # only the picked rate meets the test split
    assert (out / "compare.md").is_file() and (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert printed.strip().splitlines()[-1].startswith("ranking (test accuracy at each arm's validation-picked lr): ")

    tests = sorted(out.glob("*/lr-*/seed-*/eval/test/results.json"))
    stamps = [p.stat().st_mtime_ns for p in tests]
    assert compare.run(cfg) == 0  # everything done: nothing trains or evaluates again
    assert capsys.readouterr().out.count("finished earlier, skipped") == 4
    assert [p.stat().st_mtime_ns for p in tests] == stamps and sessions(killed) == [2]


def test_one_rate_per_arm_needs_no_validation(model_dir, tmp_path):
    out = tmp_path / "grid"
    cfg = compare_config(model_dir, out, **{"lrs.col": "[1e-3]", "lrs.lora": "[1e-3]", "test.base": True})
    assert not cfg.needs_validation and compare.run(cfg) == 0
    assert not list(out.glob("*/lr-*/seed-*/eval/after"))
    report = json.loads((out / "compare.json").read_text())
    assert report["arms"]["col"]["validation"] == {} and 0 <= report["base_accuracy"] <= 1
    assert "nothing was picked" in (out / "compare.md").read_text()


@pytest.mark.integration
def test_a_killed_bone_compare_continues_where_it_stopped(model_dir, tmp_path):
    """SIGKILL of the real command in the middle of a run, then the same command again."""
    config = tmp_path / "compare.yaml"
    config.write_text("# tiny grid\n")
    out = tmp_path / "grid"
    argv = [sys.executable, "-m", "bone", "compare", str(config),
            *compare_overrides(model_dir, out, **{"train.schedule.max_steps": 8, "train.checkpointing.every": 2})]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = out / "col" / "lr-0.003" / "seed-0"
    deadline = time.time() + 300
    while not list((second / "checkpoints").glob("step-*/state.json")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = out / "col" / "lr-0.001" / "seed-0"
    assert (first / WEIGHTS).is_file() and not (second / "adapter").exists()
    stamp = (first / WEIGHTS).stat().st_mtime_ns
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[1/4] col lr 0.001 seed 0: finished earlier, skipped" in r.stdout and "resuming at step" in r.stdout
    assert (first / WEIGHTS).stat().st_mtime_ns == stamp
    (resumed,) = sessions(second)  # the killed session never finished: only the resumed one is timed
    assert 0 < resumed < 8 and f"resuming at step {8 - resumed}" in r.stdout
    steps = [json.loads(ln)["step"] for ln in (second / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    assert r.stdout.strip().splitlines()[-1].startswith("ranking")
