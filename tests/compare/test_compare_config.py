"""CompareConfig: arms, learning-rate lists, --quick, the per-run bone train configs, and which changes
make a different grid."""
from __future__ import annotations

import pytest

from bone.compare.config import CompareConfig, differences, load_compare_config, run_config
from bone.errors import ConfigError
from bone.options import apply_overrides, parse_overrides


def make(*overrides: str) -> CompareConfig:
    return apply_overrides(CompareConfig(), parse_overrides(list(overrides)))


def test_defaults_and_per_arm_learning_rates():
    cfg = make("methods=[col,lora]", "lrs.lora=[1e-4,2e-4,4e-4]", "--lrs.col", "[5e-5]")
    assert cfg.lrs["lora"] == [1e-4, 2e-4, 4e-4] and cfg.lrs["col"] == [5e-5] and cfg.lrs["shard"] == [3e-4, 1e-3]
    assert cfg.needs_validation and not make("methods=[col,lora]", "lrs.col=[1e-4]", "lrs.lora=[1e-4]").needs_validation


@pytest.mark.parametrize("overrides,message", [
    (["methods=[col,qlora]"], "unknown method 'qlora'"),
    (["lrs.bat=[1e-4]"], "unknown method 'bat'"),
    (["methods=[]"], "methods is empty"),
    (["methods=[col,col]"], "twice"),
    (["methods=[lora,shard]"], "reference='col' is not one of methods"),
    (["lrs.lora=[]"], "lrs.lora is empty"),
    (["lrs.col=[0.0]"], "positive"),
    (["lrs.col=[1e-4,0.0001]"], "twice"),
    (["seeds=[]"], "seeds"),
    (["validation.split=test"], "validation and test read the same data"),
    (["train.eval.metric=loss"], "train.eval.metric=accuracy"),
])
def test_bad_grids_are_one_clear_line(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        make(*overrides)


def test_quick_applies_its_overrides_before_the_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: runs/x\nseeds: [0, 1, 2]\nquick:\n  - seeds=[0]\n  - output_dir=runs/x-quick\n  - test.limit=50\n")
    full = load_compare_config(path, ["test.limit=80"])
    quick = load_compare_config(path, ["test.limit=80"], quick=True)
    assert (full.seeds, full.output_dir, full.test.limit) == ([0, 1, 2], "runs/x", 80)
    assert (quick.seeds, quick.output_dir, quick.test.limit) == ([0], "runs/x-quick", 80)
    (tmp_path / "plain.yaml").write_text("seeds: [0]\n")
    with pytest.raises(ConfigError, match="no `quick:`"):
        load_compare_config(tmp_path / "plain.yaml", quick=True)


def test_each_run_is_the_shared_recipe_with_its_arm_rate_and_seed():
    cfg = make("output_dir=g", "train.bone.r=32", "train.schedule.max_steps=9", "validation.limit=40")
    col, lora = run_config(cfg, "col", 1e-4, 1), run_config(cfg, "lora", 3e-4, 0)
    assert (col.method, col.bone.variant, col.optim.lr, col.schedule.seed, col.output_dir) == ("bone", "col", 1e-4, 1, "g/col/lr-0.0001/seed-1")
    assert (lora.method, lora.bone.variant, lora.bone.r, lora.optim.lr, lora.output_dir) == ("lora", "col", 32, 3e-4, "g/lora/lr-0.0003/seed-0")
    shard = run_config(cfg, "shard", 3e-4, 0)
    assert shard.bone.variant == "shard" and shard.schedule.max_steps == col.schedule.max_steps == 9
    assert (col.data.eval, col.data.eval_split, col.data.eval_limit) == ("bundled:arith", "validation", 40)
    assert col.eval.after and not col.eval.before
    a, b = col.run_defining(), run_config(cfg, "col", 3e-4, 1).run_defining()
    assert [k for k in a if a[k] != b[k]] == ["optim.lr"]  # nothing else differs between two cells of an arm


def test_differences_name_what_changes_the_runs_and_ignore_the_grid_extent():
    saved = make("train.schedule.max_steps=6")
    assert differences(saved, make("train.schedule.max_steps=6", "seeds=[0,1,2]", "lrs.col=[1e-5]", "bootstrap=500",
                                   "train.logging.progress=false")) == []
    assert differences(saved, make("train.schedule.max_steps=8", "test.limit=100")) == [
        "test.limit: 300 -> 100", "train.schedule.max_steps: 6 -> 8"]
