"""RunDir: the run-folder layout, finding what --resume means, which folders --overwrite may delete, what a\nrun killed before its first checkpoint is told, and which temporaries a new run removes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


def a_run_killed_before_its_first_checkpoint(root) -> RunDir:
    """What a run leaves when it is killed (kill -9) between its start and its first checkpoint."""
    run = RunDir(root)
    run.root.mkdir()
    run.config.write_text("output_dir: x\n")
    run.metrics.write_text('{"step": 1, "loss": 2.0}\n')
    return run


def test_a_run_killed_before_its_first_checkpoint_gets_one_consistent_answer(tmp_path):
    """Neither --resume nor a rerun points at the other: both say it must start again with --overwrite."""
    run = a_run_killed_before_its_first_checkpoint(tmp_path / "run")
    with pytest.raises(FileExistsError) as rerun:
        run.resume_point(None, overwrite=False)
    assert str(rerun.value) == (f"output_dir {str(run.root)!r} holds a run that stopped before its first checkpoint, so there "
                                f"is nothing to resume: start it again with --overwrite, or pick another output_dir=...")
    for resume in ("latest", str(run.root)):
        with pytest.raises(FileNotFoundError) as resumed:
            run.resume_point(resume, overwrite=False)
        assert str(resumed.value) == (f"nothing to resume: the run in {str(run.root)!r} stopped before its first checkpoint; "
                                      f"start it again with --overwrite instead of --resume")
    assert run.resume_point(None, overwrite=True) is None  # --overwrite starts it again


def test_resume_point_of_other_folders(tmp_path):
    done = RunDir(tmp_path / "done")
    checkpoint(done, 2)
    assert done.resume_point("latest", overwrite=False) == done.step(2)
    with pytest.raises(FileExistsError, match="already exists and holds a run: continue it with --resume"):
        done.resume_point(None, overwrite=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume: .* holds no run; start one without --resume"):
        RunDir(tmp_path / "new").resume_point("latest", overwrite=False)
    notes = RunDir(tmp_path / "notes")
    notes.root.mkdir()
    (notes.root / "todo.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="does not look like a bone run folder .--overwrite will not delete it."):
            notes.resume_point(None, overwrite=overwrite)


def test_remove_stale_removes_only_this_runs_temporaries_of_dead_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = RunDir(tmp_path / "run")
    checkpoint(run, 2)
    (run.root / "eval" / "after").mkdir(parents=True)
    ours = [run.checkpoints / f".step-000004.tmp-{dead.pid}", run.checkpoints / f".step-000002.tmp-{dead.pid}.old",
            run.root / f".adapter.tmp-{dead.pid}", run.root / f".metrics.jsonl.tmp-{dead.pid}.a1b2c3",
            run.root / f".config.yaml.tmp-{dead.pid}.x9", run.root / f".loss.png.tmp-{dead.pid}.q",
            run.root / "eval" / "after" / f".results.json.tmp-{dead.pid}.k"]
    kept = [run.checkpoints / f".step-000006.tmp-{os.getpid()}",  # a writer that is still running
            run.checkpoints / f".notes.tmp-{dead.pid}", run.root / f".mine.tmp-{dead.pid}", run.root / "adapter.tmp-1",
            run.checkpoints / "step-000002"]
    for p in ours[:3]:
        p.mkdir()
        (p / "optimizer.pt").write_bytes(b"\0" * 100)
    for p in ours[3:]:
        p.write_text("half")
    kept[0].mkdir()
    for p in kept[1:4]:
        p.write_text("not bone's")
    assert sorted(run.remove_stale()) == sorted(ours)
    assert not any(p.exists() for p in ours) and all(p.exists() for p in kept)
