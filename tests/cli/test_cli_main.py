"""The `bone` command itself: help without torch, dispatch, and how errors are reported (a user
error is one line, a bug keeps its traceback and asks to be reported, --traceback shows both)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bone.cli.train

ROOT = Path(__file__).parents[2]
ENV = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}

HELP_PROBE = """
import contextlib, io, json, sys
from bone.cli import main
codes = {}
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        codes[" ".join(argv)] = main(argv)
print(json.dumps({"codes": codes, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


def test_help_and_usage_errors_do_not_import_torch():
    """Help of every command (bench's is bone.bench's own) and argparse's usage errors run without torch."""
    calls = [["--help"], [], ["train", "--help"], ["eval", "--help"], ["merge", "--help"], ["export", "--help"],
             ["export", "--to", "merged", "--help"], ["bench", "--help"], ["compare", "--help"], ["trian"], ["train"],
             ["eval", "--model", "m"], ["train", "--stop-at", "x"], ["train", "--stop-at", "0"], ["export", "--to", "gguf"],
             ["export", "--to", "merged", "--adapter", "a", "--out", "o"], ["bench", "--repeats", "x"],
             ["eval", "--model", "m", "--data", "d", "--out", "o", "--batch-size", "0"],
             ["eval", "--model", "m", "--data", "d", "--out", "o", "--max-new-tokens", "0"],
             ["eval", "--model", "m", "--data", "d", "--out", "o", "--limit", "0"],
             ["eval", "--model", "m", "--data", "d", "--out", "o", "--max-length", "1"],
             ["generate", "--help"], ["chat", "--help"], ["generate", "--model", "m"], ["chat", "--top-k", "x"]]
    r = subprocess.run([sys.executable, "-c", HELP_PROBE, json.dumps(calls)], capture_output=True, text=True, env=ENV,
                       cwd=ROOT, timeout=120)
    found = json.loads(r.stdout)
    assert found["codes"] == {" ".join(c): 0 if "--help" in c else 2 for c in calls}
    assert found["torch"] is False and found["transformers"] is False


def test_numeric_arguments_out_of_range_are_usage_errors(bone_cli):
    code, _, err = bone_cli("eval", "--model", "m", "--data", "d", "--out", "o", "--batch-size", "0")
    assert code == 2 and err.splitlines()[-1] == "bone eval: error: argument --batch-size: must be >= 1, got 0"
    code, _, err = bone_cli("train", "--stop-at", "0")
    assert code == 2 and err.splitlines()[-1] == "bone train: error: argument --stop-at: must be >= 1, got 0"


def test_python_dash_m_bone_lists_commands():
    r = subprocess.run([sys.executable, "-m", "bone", "--help"], capture_output=True, text=True, cwd=ROOT, env=ENV,
                       timeout=120)
    assert r.returncode == 0
    assert all(f"bone {c}" in r.stdout for c in ("train", "eval", "merge", "export", "generate", "chat", "bench", "compare"))


def test_unknown_command_is_a_usage_error(bone_cli):
    code, _, err = bone_cli("trian")
    assert code == 2 and "invalid choice: 'trian'" in err and "'train'" in err


def test_train_without_config_or_overrides_is_a_usage_error(bone_cli):
    """A bare `bone train` would start the default run (hours on a CPU): it asks for a config instead."""
    code, _, err = bone_cli("train")
    assert code == 2 and err.splitlines()[0].startswith("usage: bone train")
    assert err.splitlines()[-1].startswith("bone train: error: needs CONFIG.yaml (e.g. configs/demo.yaml)")


@pytest.mark.parametrize("argv,near", [(["train", "configs/demo.yaml", "--overwrit"], "--overwrite"),
                                       (["train", "configs/demo.yaml", "--print-conifg"], "--print-config"),
                                       (["compare", "configs/compare-demo.yaml", "--quik"], "--quick")])
def test_a_misspelled_option_is_a_usage_error_naming_the_option(bone_cli, argv, near):
    """Not an unknown config key: the command's own option it resembles."""
    code, _, err = bone_cli(*argv)
    bad = argv[-1]
    assert code == 2 and err.splitlines()[-1] == f"bone {argv[0]}: error: unrecognized argument {bad}; did you mean {near}?"


@pytest.mark.parametrize("argv", [["train", "configs/demo.yaml", "--lr", "1e-4"],
                                  ["train", "configs/demo.yaml", "--steps", "100"],
                                  ["compare", "configs/compare-demo.yaml", "--lr", "1e-4"]])
def test_an_unknown_word_that_is_no_typo_of_an_option_is_an_unknown_config_key(bone_cli, argv):
    code, _, err = bone_cli(*argv)
    assert code == 1 and f"unknown config key '{argv[2][2:]}'" in err and "did you mean --" not in err


def test_output_into_a_closed_pipe_ends_quietly():
    """`bone train CONFIG --print-config | head -1`: the reader is gone, bone stops without a report."""
    read, write = os.pipe()
    os.close(read)  # no reader: the first write fails with EPIPE
    try:
        r = subprocess.run([sys.executable, "-m", "bone", "train", "configs/demo.yaml", "--print-config"], stdout=write,
                           stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV, timeout=120)
    finally:
        os.close(write)
    assert (r.returncode, r.stderr) == (141, "")


def test_a_user_error_is_one_line(bone_cli):
    code, out, err = bone_cli("train", "optim.lr=fast")
    assert code == 1 and out == ""
    assert err == "bone train: error: config key 'optim.lr': expected float, got 'fast'\n"


@pytest.mark.parametrize("where", ["before", "after"])
def test_traceback_flag_shows_the_traceback_of_a_user_error(bone_cli, where):
    argv = ["train", "optim.lr=fast"]
    code, _, err = bone_cli(*(["--traceback", *argv] if where == "before" else [*argv, "--traceback"]))
    assert code == 1 and err.startswith("Traceback (most recent call last):")
    assert "bone.errors.ConfigError" in err and err.endswith("bone train: error: config key 'optim.lr': expected float, got 'fast'\n")


def test_an_internal_error_keeps_its_traceback_and_asks_for_a_report(bone_cli, monkeypatch):
    """A bug (here a KeyError planted in the train command) is never shortened to a user error."""
    def buggy(args):
        return {}["step"]

    monkeypatch.setattr(bone.cli.train, "run", buggy)
    code, _, err = bone_cli("train", "optim.lr=1e-4")
    lines = err.splitlines()
    assert code == 1 and lines[0] == "Traceback (most recent call last):" and "in buggy" in err
    assert lines[-2] == "KeyError: 'step'"
    assert lines[-1].startswith("bone train: internal error (KeyError): this is a bug in bone, not in your input; "
                                "please report it with the traceback above (bone 0.1.0, Python ")


def test_a_broken_pipe_other_than_stdout_is_reported_as_a_bug(bone_cli, monkeypatch):
    """Only stdout's reader going away ends quietly; a broken pipe to anything else keeps its traceback."""
    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(bone.cli.train, "run", broken)
    code, _, err = bone_cli("train", "optim.lr=1e-4")
    assert code == 1 and "Traceback" in err and "in broken" in err
    assert err.splitlines()[-1].startswith("bone train: internal error (BrokenPipeError)")


def test_os_errors_a_user_causes_are_one_line(bone_cli, model_dir, tmp_path):
    """--out below a plain file: the OS's Not a directory, with the path, and nothing written."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = bone_cli("eval", "--model", model_dir, "--data", "bundled:arith", "--limit", 2, "--metric", "loss",
                            "--out", blocker / "results")
    assert code == 1 and "Traceback" not in err  # (above it: transformers' loading progress)
    assert err.splitlines()[-1] == f"bone eval: error: Not a directory: '{blocker / 'results'}'"
    assert blocker.read_text() == "x"


def test_a_full_disk_is_one_line(bone_cli, model_dir, tmp_path, small_disk):
    run = tmp_path / "run"
    code, out, _ = bone_cli("train", "output_dir=" + str(run), "model.path=" + str(model_dir), "data.train_limit=8",
                            "data.max_length=64", "schedule.max_steps=1", "logging.progress=false",
                            "logging.tensorboard=false", "logging.plot=false", "bone.r=8")
    assert code == 0
    disk = small_disk(256)  # the tiny model's shards need ~560 KiB
    code, _, err = bone_cli("merge", "--base", model_dir, "--adapter", run / "adapter", "--out", disk.path / "merged",
                            "--no-check")
    last = err.splitlines()[-1]
    assert code == 1 and "Traceback" not in err and last.startswith("bone merge: error: No space left on device: ")
    assert last.endswith("(free some space, or write somewhere else)")
    assert list(disk.path.iterdir()) == []


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
    import tiny

    out = tmp_path / "run"
    args = tiny.overrides(model_dir, out, **{"schedule.batch_size": 64, "data.max_length": 2048, "data.packing": True,
                                             "data.train_limit": 3000, "schedule.max_steps": 1})
    r = subprocess.run([sys.executable, "-c", OOM_RUNNER, "train", *map(str, args)], capture_output=True, text=True,
                       env={**ENV, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.splitlines()[-1]
    assert last.startswith("bone train: error: out of memory") and "gradient_checkpointing" in last
    assert "Traceback" not in r.stderr and not out.exists()
