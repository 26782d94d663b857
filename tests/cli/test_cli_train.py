"""`bone train` from the command line: help, config printing, overrides in both forms, --resume
forms, and bad input (one clear line, exit 1, nothing written)."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

import tiny  # noqa: E402
from bone.train import TrainConfig

ROOT = Path(__file__).parents[2]


def leaf_keys(obj, prefix=""):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        yield from leaf_keys(v, prefix + f.name + ".") if dataclasses.is_dataclass(v) else [(prefix + f.name, v)]


def test_train_help_documents_every_option_with_default(bone_cli):
    code, out, _ = bone_cli("train", "--help")
    assert code == 0 and "--resume" in out and "accelerate launch" in out
    lines = out.splitlines()
    for key, default in leaf_keys(TrainConfig()):
        name = key.rsplit(".", 1)[-1]
        shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else None
        assert any(ln.strip().startswith(f"{name}:") and "#" in ln and (shown is None or f": {shown}" in ln) for ln in lines), key


def test_print_config_applies_overrides_in_both_forms(bone_cli):
    code, out, _ = bone_cli("train", ROOT / "configs" / "demo.yaml", "bone.r=32", "--optim.lr", "3e-4",
                            "--schedule.max_steps=9", "--print-config")
    assert code == 0 and "  r: 32  #" in out and "  lr: 0.0003  #" in out and "  max_steps: 9  #" in out
    assert "  path: smollm2-135m  #" in out


def test_resume_takes_an_override_or_a_config_after_it(bone_cli):
    """`--resume key=value` is a bare --resume then an override; `--resume CONFIG.yaml` names the config."""
    code, out, _ = bone_cli("train", ROOT / "configs" / "demo.yaml", "--resume", "bone.r=16", "--print-config")
    assert code == 0 and "  r: 16  #" in out
    code, out, _ = bone_cli("train", "--resume", ROOT / "configs" / "demo.yaml", "--print-config")
    assert code == 0 and "output_dir: runs/demo  #" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "missing.yaml"], "config file 'missing.yaml' not found"),
    (["train", "optim.lr=fast"], "config key 'optim.lr': expected float, got 'fast'"),
    (["train", "optim.learning_rate=1"], "unknown config key 'optim.learning_rate'"),
    (["train", "method=adalora"], "unknown method 'adalora'; choose one of ['bone', 'lora', 'pissa', 'dora', 'full']"),
    (["train", "data.template=plain"], "data.template='plain': use one of ('alpaca', 'chat')"),
    (["train", "--resume", "/nonexistent/run"], "--resume /nonexistent/run is not a folder"),
    (["train", "--bogus"], "unknown config key 'bogus'"),
    (["train", "--bogus", "--optim.lr", "1e-4"], "unknown config key 'bogus'"),
    (["train", "--optim.lr"], "option --optim.lr needs a value: --optim.lr VALUE or optim.lr=VALUE"),
    (["train", "optim.max_grad_norm=-1"], "optim.max_grad_norm must be > 0 (clip to that norm) or null (no clipping), got -1.0"),
    (["train", "eval.batch_size=0"], "eval.batch_size must be >= 1, got 0"),
    (["train", "eval.max_new_tokens=0"], "eval.max_new_tokens must be >= 1, got 0"),
    (["train", "optim.lr=inf"], "optim.lr must be > 0 and finite, got inf"),
])
def test_bad_arguments_exit_1_with_a_message(bone_cli, argv, message):
    code, _, err = bone_cli(*argv)
    assert code == 1 and message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_bad_data_and_models_exit_1_and_write_nothing(bone_cli, model_dir, tmp_path):
    out = tmp_path / "run"
    bad_rows = tmp_path / "bad.jsonl"
    bad_rows.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?", "answer": \n')
    empty_row = tmp_path / "empty.jsonl"
    empty_row.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": "", "answer": "#### 4"}\n')
    cases = [
        (["data.train=" + str(tmp_path / "nope.jsonl")], "nope.jsonl"),
        (["data.train=" + str(bad_rows)], "line 2"),
        (["data.train=" + str(empty_row)], "record 1"),
        (["data.train=" + str(empty_row), "data.prompt_field=title"], "title"),
        (["data.eval=" + str(bad_rows)], "line 2"),  # held-out data is checked before training too
        (["data.train_limit=3"], "3 training examples is fewer than one global batch of 4"),
        (["model.path=" + str(tmp_path / "no-model")], "not found"),
        (["bone.target_modules=[wq, wk]"], "q_proj"),
        (["bone.r=48"], "r=48"),
        (["model.path=meta-llama/Llama-2-7b-hf"], "model=/path/to/hf_model_dir"),  # offline Hub name: fails at once
    ]
    for extra, message in cases:
        code, _, err = bone_cli("train", *tiny.overrides(model_dir, out), *extra)
        assert code == 1 and message in err and "Traceback" not in err, (extra, err)
        assert not out.exists(), extra


def test_existing_output_dir_is_refused(bone_cli, model_dir, tmp_path):
    out = tmp_path / "run"
    assert bone_cli("train", *tiny.overrides(model_dir, out, **{"schedule.max_steps": 1}))[0] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code, _, err = bone_cli("train", *tiny.overrides(model_dir, out, **{"schedule.max_steps": 1}))
    assert code == 1 and "already exists" in err and "--resume" in err and "--overwrite" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_stop_then_resume_from_the_run_folder_or_a_checkpoint_alone(bone_cli, model_dir, tmp_path):
    run = tmp_path / "run"
    code, out, _ = bone_cli("train", *tiny.overrides(model_dir, run), "--stop-at", "2")
    assert code == 0 and "stopped by stop_at=2 after step 2" in out and not (run / "adapter").exists()
    assert f"continue with: bone train --resume {run}\n" in out  # the command the last call below runs
    code, out, _ = bone_cli("train", "--resume", run / "checkpoints" / "step-000002", "--stop-at", "4")
    assert code == 0 and "resuming at step 2" in out and "stopped by stop_at=4" in out
    code, out, _ = bone_cli("train", "--resume", run)  # config read from the run folder
    assert code == 0 and "resuming at step 4" in out and (run / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("lr, line", [
    ("1e37", "bone train: error: step 2: the training loss is nan (gradient norm nan); the run stopped without saving this step "
             "(newest checkpoint: {ckpt}). Try a lower optim.lr (this run: 1e+37; start again with --overwrite) or "
             "optim.skip_nonfinite=N to skip up "
             "to N such steps (it may change on --resume)"),
    ("1e38", "bone train: error: step 1: AdamW's update size lr / (1 - beta1^t) = 1e+39 (lr 1e+38, t=1) does not fit float32 "
             "(largest 3.4e+38); the run stopped without saving this step (no checkpoint was written yet). Try a lower "
             "optim.lr (this run: 1e+38)"),
])
def test_a_diverging_run_ends_in_one_line_and_exit_1(bone_cli, model_dir, tmp_path, lr, line):
    run = tmp_path / "run"
    code, out, err = bone_cli("train", *tiny.overrides(model_dir, run, **{"optim.lr": lr, "checkpointing.every": 1}))
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[-1] == line.format(ckpt=run / "checkpoints" / "step-000001")
    assert not (run / "adapter").exists()


def test_a_full_disk_during_training_is_one_line_naming_the_checkpoint_file(bone_cli, model_dir, small_disk):
    disk = small_disk(512)
    run = disk.path / "run"
    assert bone_cli("train", *tiny.overrides(model_dir, run), "--stop-at", "2")[0] == 0
    disk.fill(leave=8 << 10)
    code, _, err = bone_cli("train", "--resume", run)
    last = err.splitlines()[-1]
    assert code == 1 and "Traceback" not in err
    assert last.startswith(f"bone train: error: No space left on device: '{run / 'checkpoints' / 'step-000004'}/")
    assert last.endswith("' (free some space, or write somewhere else)")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002"]


def test_a_truncated_optimizer_file_is_one_line_naming_it(bone_cli, model_dir, tmp_path):
    run = tmp_path / "run"
    assert bone_cli("train", *tiny.overrides(model_dir, run), "--stop-at", "2")[0] == 0
    opt = run / "checkpoints" / "step-000002" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:1000])
    code, _, err = bone_cli("train", "--resume", run)
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[-1].startswith(f"bone train: error: {opt} is truncated or corrupt (")
    assert err.splitlines()[-1].endswith("start again with --overwrite")


@pytest.mark.integration
def test_after_a_kill_before_the_first_checkpoint_resume_and_rerun_agree(bone_cli, model_dir, tmp_path):
    """kill -9 before any checkpoint: --resume and a plain rerun both say to start again with --overwrite, which works."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = tiny.overrides(model_dir, run, **{"schedule.max_steps": 200, "schedule.epochs": 20, "checkpointing.every": 1000})
    proc = subprocess.Popen([sys.executable, "-m", "bone", "train", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "checkpoints").exists() and (run / "config.yaml").is_file()
    code, _, err = bone_cli("train", "--resume", run)
    assert code == 1 and err.splitlines()[-1] == (f"bone train: error: nothing to resume: the run in {str(run)!r} stopped "
                                                  f"before its first checkpoint; start it again with --overwrite instead of --resume")
    code, _, err = bone_cli("train", *args)
    assert code == 1 and err.splitlines()[-1] == (f"bone train: error: output_dir {str(run)!r} holds a run that stopped before "
                                                  f"its first checkpoint, so there is nothing to resume: start it again with "
                                                  f"--overwrite, or pick another output_dir=...")
    code, _, _ = bone_cli("train", *tiny.overrides(model_dir, run, **{"schedule.max_steps": 2}), "--overwrite")
    assert code == 0 and (run / "adapter" / "adapter_model.safetensors").is_file()


def test_a_peft_run_shows_no_deprecation_warning_peft_triggers_in_transformers(bone_cli, model_dir, tmp_path):
    """PEFT reads transformers 5's deprecated `is_gradient_checkpointing`; the command hides that warning
    (bone.cli.QUIET_WARNINGS), nothing the user could change."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, _, err = bone_cli("train", *tiny.overrides(model_dir, tmp_path / "run", method="lora",
                                                         **{"schedule.max_steps": 1}))
    assert code == 0, err
    assert not [w for w in seen if "is_gradient_checkpointing" in str(w.message)]
