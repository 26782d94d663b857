"""`bone train` from the command line: help, config printing, overrides in both forms, --resume
forms, and bad input (one clear line, exit 1, nothing written)."""
from __future__ import annotations

import dataclasses
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
    (["train", "method=lora"], "unknown method 'lora'; choose one of ['bone']"),
    (["train", "data.template=plain"], "data.template='plain': use one of ('alpaca', 'chat')"),
    (["train", "--resume", "/nonexistent/run"], "--resume /nonexistent/run is not a folder"),
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
    code, out, _ = bone_cli("train", "--resume", run / "checkpoints" / "step-000002", "--stop-at", "4")
    assert code == 0 and "resuming at step 2" in out and "stopped by stop_at=4" in out
    code, out, _ = bone_cli("train", "--resume", run)  # config read from the run folder
    assert code == 0 and "resuming at step 4" in out and (run / "adapter" / "adapter_config.json").is_file()
