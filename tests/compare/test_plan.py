"""Bad input to `bone compare` is one line, before any run, and leaves nothing behind: unknown method,
empty learning-rate list, missing validation data, PEFT missing, an unmatched parameter count (runs
only when allowed), a grid folder written by a different config."""
from __future__ import annotations

import json
import sys

import pytest

from bone.cli import main
from bone.compare.plan import check_counts, make_plan
from bone.errors import ConfigError
from tiny import compare_config, compare_overrides


@pytest.fixture
def cli(tmp_path, capsys):
    """cli(*overrides) -> (code, stdout, stderr) of `bone compare` on an empty config file plus overrides."""
    config = tmp_path / "compare.yaml"
    config.write_text("# a grid given entirely by overrides\n")

    def call(*overrides):
        capsys.readouterr()
        code = main(["compare", str(config), *map(str, overrides)])
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("extra,words", [
    ({"methods": "[col,qlora]"}, "unknown method 'qlora'"),
    ({"lrs.lora": "[]"}, "lrs.lora is empty"),
    ({"train.data.train": "{data}"}, "validation data missing"),
    ({"train.data.train": "{data}", "validation.source": "{data}", "test.source": "{data}"},
     "validation and test data share"),
    ({"validation.source": "{missing}"}, "not found"),
    ({"lrs.col": "[1e-3]", "lrs.lora": "[1e-3]", "train.data.train": "{data}"}, "test data missing"),
    ({"train.lora.r": 1}, "lora (LoRA r=1) trains 2,048 parameters, -75.0% from the reference col"),
    ({"methods": "[col,full]", "lrs.full": "[1e-4]"}, "full (full fine-tuning) trains"),
])
def test_bad_input_is_one_line_before_any_run(cli, model_dir, tmp_path, extra, words):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"}) + "\n" for i in range(60)))
    values = {k: str(v).format(data=data, missing=tmp_path / "nope.jsonl") for k, v in extra.items()}
    code, out, err = cli(*compare_overrides(model_dir, tmp_path / "grid", **values))
    assert code == 1 and words in one_line(err) and not (tmp_path / "grid").exists()


def test_an_unmatched_arm_runs_only_when_allowed(model_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"allow_unmatched=\[full\]"):
        check_counts(compare_config(model_dir, tmp_path / "g", methods="[col,full]", **{"lrs.full": "[1e-4]"}))
    counts, labels = check_counts(compare_config(model_dir, tmp_path / "g", methods="[col,full]",
                                                 allow_unmatched="[full]", **{"lrs.full": "[1e-4]"}))
    assert counts["full"] > 10 * counts["col"] and labels["full"] == "full fine-tuning"


def test_matched_counts_come_from_shapes_alone(model_dir, tmp_path):
    counts, labels = check_counts(compare_config(model_dir, tmp_path / "g", methods="[col,shard,lora,pissa,dora]",
                                                 param_tolerance=0.15, **{"lrs.shard": "[1e-3]", "lrs.pissa": "[1e-3]", "lrs.dora": "[1e-3]"}))
    assert counts == {"col": 8192, "shard": 8192, "lora": 8192, "pissa": 8192, "dora": 7168}
    assert labels == {"col": "Bone-col r=8", "shard": "Bone-shard r=8", "lora": "LoRA r=4 (auto)",
                      "pissa": "PiSSA r=4 (auto)", "dora": "DoRA r=3 (auto)"}


def test_missing_peft_is_one_line(cli, model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    code, _, err = cli(*compare_overrides(model_dir, tmp_path / "grid"))
    assert code == 1 and one_line(err) == 'bone compare: error: method lora needs the `peft` package: pip install "bone[compare]"'
    assert not (tmp_path / "grid").exists()


def test_a_grid_folder_of_another_config_is_refused_with_the_differences(model_dir, tmp_path):
    from bone.compare import grid

    plan = make_plan(compare_config(model_dir, tmp_path / "grid", methods="[col]", **{"lrs.col": "[1e-3]"}))
    assert grid.run_grid(plan) == 0
    changed = compare_config(model_dir, tmp_path / "grid", methods="[col]", **{"lrs.col": "[1e-3]"},
                             **{"train.schedule.max_steps": 5, "train.data.max_length": 100})
    with pytest.raises(ConfigError, match=r"different config \(train.data.max_length: 128 -> 100; "
                                          r"train.schedule.max_steps: 4 -> 5\)"):
        make_plan(changed)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a bone compare folder"):
        make_plan(compare_config(model_dir, tmp_path / "other"))
