"""`bone compare` at the command line: --plan lists the runs and their state without training,
--print-config shows the resolved config, and a missing config file is one line."""
from __future__ import annotations

import yaml

from tiny import compare_overrides


def test_plan_lists_every_run_without_training(bone_cli, model_dir, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("seeds: [0, 1]\n")
    code, out, _ = bone_cli("compare", config, *compare_overrides(model_dir, tmp_path / "grid", seeds="[0,1]"), "--plan")
    assert code == 0 and not (tmp_path / "grid").exists()
    lines = out.strip().splitlines()
    assert lines[:2] == ["col: Bone-col r=8, 8,192 trainable parameters", "lora: LoRA r=4 (auto), 8,192 trainable parameters"]
    assert len(lines) == 2 + 8 and all(": new (" in ln for ln in lines[2:])
    assert lines[2].strip().startswith("col lr 0.001 seed 0: new") and lines[-1].strip().startswith("lora lr 0.003 seed 1: new")


def test_print_config_and_quick(bone_cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("seeds: [0, 1]\nquick:\n  - seeds=[0]\n")
    code, out, _ = bone_cli("compare", config, "--quick", "--print-config")
    assert code == 0 and yaml.safe_load(out)["seeds"] == [0]


def test_missing_config_is_one_line(bone_cli, tmp_path):
    code, _, err = bone_cli("compare", tmp_path / "nope.yaml")
    assert code == 1 and err.strip().splitlines() == [f"bone compare: error: config file '{tmp_path / 'nope.yaml'}' not found "
                                                      f"(pass a YAML file such as configs/demo.yaml)"]
    code, _, err = bone_cli("compare")
    assert code == 1 and "needs a config file" in err
