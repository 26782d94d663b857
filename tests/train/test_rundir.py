"""RunDir: the run-folder layout, finding what --resume means, and which folders --overwrite may delete."""
from __future__ import annotations

from bone.train.rundir import RunDir


def checkpoint(run: RunDir, step: int, complete: bool = True):
    path = run.step(step)
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"# step {step}\n")
    if complete:
        (path / "state.json").write_text("{}")
    return path


def test_layout(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.root == tmp_path / "run" and run.config == run.root / "config.yaml"
    assert run.step(40) == run.root / "checkpoints" / "step-000040"
    assert (run.adapter, run.metrics, run.loss_plot, run.tensorboard) == (
        run.root / "adapter", run.root / "metrics.jsonl", run.root / "loss.png", run.root / "tensorboard")
    assert run.eval("after") == run.root / "eval" / "after"


def test_complete_checkpoints_in_step_order(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.list_checkpoints() == [] and run.latest() is None and run.is_empty()
    for step in (9, 10, 100):
        checkpoint(run, step)
    checkpoint(run, 200, complete=False)  # killed while being written: no state.json
    (run.checkpoints / ".step-000300.tmp-1").mkdir()
    (run.checkpoints / "step-notes").mkdir()
    assert [p.name for p in run.list_checkpoints()] == ["step-000009", "step-000010", "step-000100"]
    assert run.latest() == run.step(100) and run.holds(run.step(9)) and not RunDir(tmp_path / "x").holds(run.step(9))


def test_what_resume_and_its_config_mean(tmp_path):
    run = RunDir(tmp_path / "run")
    first, last = checkpoint(run, 2), checkpoint(run, 4)
    assert RunDir.find_checkpoint(first) == first  # a checkpoint itself
    assert RunDir.find_checkpoint(run.root) == last  # a run folder: its newest
    assert RunDir.find_checkpoint(run.checkpoints) == last  # its checkpoints folder: the newest
    assert RunDir.find_checkpoint(tmp_path / "elsewhere") is None
    assert RunDir.find_config(first) == first / "config.yaml"
    assert RunDir.find_config(run.root) == last / "config.yaml"  # no run config.yaml: the resumed checkpoint's
    run.config.write_text("# the run's\n")
    assert RunDir.find_config(run.root) == run.config


def test_only_bone_run_folders_look_like_runs(tmp_path):
    notes = RunDir(tmp_path / "notes")
    notes.root.mkdir()
    (notes.root / "todo.txt").write_text("mine")
    assert not notes.is_empty() and not notes.looks_like_run()
    run = RunDir(tmp_path / "run")
    checkpoint(run, 1)
    assert run.looks_like_run()
