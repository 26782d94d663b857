"""The `bone` command: help, config printing, bad input (clear message, exit 1, nothing written), eval, merge."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bone.cli import main
from bone.train import TrainConfig

import tiny  # noqa: E402

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny.make_model_dir(tmp_path_factory.mktemp("tiny-llama"))


def bone_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_python_dash_m_bone_lists_commands():
    r = subprocess.run([sys.executable, "-m", "bone", "--help"], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0 and all(c in r.stdout for c in ("bone train", "bone eval", "bone merge", "bone bench"))


def test_unknown_command(capsys):
    code, _, err = bone_cli(capsys, "trian")
    assert code == 2 and "unknown command 'trian'" in err


def leaf_keys(obj, prefix=""):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        yield from leaf_keys(v, prefix + f.name + ".") if dataclasses.is_dataclass(v) else [(prefix + f.name, v)]


def test_train_help_documents_every_option_with_default(capsys):
    code, out, _ = bone_cli(capsys, "train", "--help")
    assert code == 0 and "--resume" in out and "accelerate launch" in out
    lines = out.splitlines()
    for key, default in leaf_keys(TrainConfig()):
        name = key.rsplit(".", 1)[-1]
        shown = "null" if default is None else str(default).lower() if isinstance(default, bool) else None
        assert any(ln.strip().startswith(f"{name}:") and "#" in ln and (shown is None or f": {shown}" in ln) for ln in lines), key


def test_print_config_applies_overrides(capsys):
    code, out, _ = bone_cli(capsys, "train", ROOT / "configs" / "demo.yaml", "bone.r=32", "--optim.lr", "3e-4", "--print-config")
    assert code == 0 and "  r: 32  #" in out and "  lr: 0.0003  #" in out and "  path: smollm2-135m  #" in out


@pytest.mark.parametrize("argv, message", [
    (["train", "missing.yaml"], "config file 'missing.yaml' not found"),
    (["train", "optim.lr=fast"], "config key 'optim.lr': expected float, got 'fast'"),
    (["train", "optim.learning_rate=1"], "unknown config key 'optim.learning_rate'"),
    (["train", "--stop-at", "soon"], "--stop-at needs a step number"),
    (["merge", "--base", "nowhere", "--adapter", "nowhere", "--out", "x"], "--base nowhere does not exist"),
])
def test_bad_arguments_exit_1_with_a_message(capsys, argv, message):
    code, _, err = bone_cli(capsys, *argv)
    assert code == 1 and message in err and "Traceback" not in err


def test_bad_data_and_models_exit_1_and_write_nothing(capsys, model_dir, tmp_path):
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
        (["model.path=" + str(tmp_path / "no-model")], "not found"),
        (["bone.target_modules=[wq, wk]"], "q_proj"),
        (["bone.r=48"], "r=48"),
        (["model.path=meta-llama/Llama-2-7b-hf"], "model=/path/to/hf_model_dir"),  # offline Hub name: fails at once
    ]
    for extra, message in cases:
        code, _, err = bone_cli(capsys, "train", *tiny.overrides(model_dir, out), *extra)
        assert code == 1 and message in err and "Traceback" not in err, (extra, err)
        assert not out.exists(), extra


def test_existing_output_dir_is_refused(capsys, model_dir, tmp_path):
    out = tmp_path / "run"
    assert bone_cli(capsys, "train", *tiny.overrides(model_dir, out, **{"schedule.max_steps": 1}))[0] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    code, _, err = bone_cli(capsys, "train", *tiny.overrides(model_dir, out, **{"schedule.max_steps": 1}))
    assert code == 1 and "already exists" in err and "--resume" in err and "--overwrite" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_stop_then_resume_from_the_run_folder_alone(capsys, model_dir, tmp_path):
    run = tmp_path / "run"
    code, out, _ = bone_cli(capsys, "train", *tiny.overrides(model_dir, run), "--stop-at", "2")
    assert code == 0 and "stopped by stop_at=2 after step 2" in out and not (run / "adapter").exists()
    code, out, _ = bone_cli(capsys, "train", "--resume", run)  # config read from the checkpoint
    assert code == 0 and "resuming at step 2" in out and (run / "adapter" / "adapter_config.json").is_file()
    code, _, err = bone_cli(capsys, "eval", "--model", model_dir, "--adapter", tmp_path / "none", "--data", "bundled:arith",
                            "--out", tmp_path / "e")
    assert code == 1 and "adapter directory" in err and not (tmp_path / "e").exists()


def test_train_eval_merge_end_to_end(capsys, model_dir, tmp_path):
    run = tmp_path / "run"
    code, out, _ = bone_cli(capsys, "train", *tiny.overrides(model_dir, run, **{
        "data.eval": "bundled:arith", "data.eval_limit": 6, "eval.before": True, "eval.after": True,
        "eval.max_new_tokens": 8, "logging.plot": True}))
    assert code == 0
    assert "held-out accuracy before training" in out and "held-out accuracy after training" in out
    assert f"adapter: {run / 'adapter'}" in out and f"loss plot: {run / 'loss.png'}" in out
    assert json.loads((run / "eval" / "after" / "results.json").read_text())["n"] == 6

    merged = tmp_path / "merged"
    code, out, _ = bone_cli(capsys, "merge", "--base", model_dir, "--adapter", run / "adapter", "--out", merged)
    assert code == 0 and "probe check: max |logit difference|" in out and (merged / "config.json").is_file()

    results = {}
    for name, extra in {"base": [], "adapter": ["--adapter", run / "adapter"], "merged": []}.items():
        model = merged if name == "merged" else model_dir
        code, out, _ = bone_cli(capsys, "eval", "--model", model, *extra, "--data", "bundled:arith", "--limit", 6,
                                "--max-new-tokens", 8, "--out", tmp_path / f"eval-{name}")
        assert code == 0
        preds = [json.loads(ln) for ln in (tmp_path / f"eval-{name}" / "predictions.jsonl").read_text().splitlines()]
        results[name] = [p["output"] for p in preds]
        assert json.loads((tmp_path / f"eval-{name}" / "results.json").read_text())["n"] == 6
    assert results["adapter"] == results["merged"]  # greedy decoding: identical generations

    code, out, _ = bone_cli(capsys, "eval", "--model", merged, "--data", "bundled:arith", "--limit", 6,
                            "--metric", "loss", "--out", tmp_path / "eval-loss")
    loss = json.loads((tmp_path / "eval-loss" / "results.json").read_text())
    assert code == 0 and loss["perplexity"] > 1 and loss["tokens"] > 0


def test_bench_dispatches_to_bone_bench(capsys):
    with pytest.raises(SystemExit) as e:  # argparse's --help exits 0
        main(["bench", "--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out.lower()


OOM_RUNNER = """
import resource, sys
import torch, transformers, accelerate  # heavy imports before the limit
import bone.train.trainer, bone.data
from bone.cli import main
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (600 << 20), vm + (600 << 20)))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.integration
def test_out_of_memory_prints_the_hint_and_leaves_nothing(model_dir, tmp_path):
    """A real allocation failure: the address space is capped 600 MB above the imports, and one step
    of 64 packed rows of 2048 tokens needs more."""
    out = tmp_path / "run"
    args = tiny.overrides(model_dir, out, **{"schedule.batch_size": 64, "data.max_length": 2048, "data.packing": True,
                                             "data.train_limit": 3000, "schedule.max_steps": 1})
    r = subprocess.run([sys.executable, "-c", OOM_RUNNER, "train", *map(str, args)], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "out of memory. Try" in r.stderr and "gradient_checkpointing" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
