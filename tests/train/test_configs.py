"""Every config shipped in configs/ loads and validates (without touching the models or data it names)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bone.train import load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))
TRAIN_CONFIGS = [p for p in CONFIGS if "accelerate" not in p.name]


def test_configs_are_shipped():
    names = {p.name for p in CONFIGS}
    assert {"demo.yaml", "llama2-7b-metamath.yaml", "llama2-7b-metamath-multigpu.yaml", "rwkv6-3b-metamath.yaml",
            "accelerate-4gpu.yaml"} <= names


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_train_config_validates(path):
    cfg = load_config(path)
    assert cfg.output_dir


def test_paper_recipe_hyperparameters():
    cfg = load_config(Path(__file__).parents[2] / "configs" / "llama2-7b-metamath.yaml")
    assert (cfg.bone.variant, cfg.bone.r, cfg.optim.lr, cfg.schedule.scheduler, cfg.schedule.warmup_steps) == ("col", 64, 2e-5, "cosine", 0)
    assert sorted(cfg.bone.target_modules) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert cfg.schedule.batch_size * cfg.schedule.grad_accum == 64 and cfg.data.max_length == 512
    assert cfg.model.gradient_checkpointing and cfg.schedule.precision == "bf16" and cfg.schedule.epochs == 1
    multi = load_config(Path(__file__).parents[2] / "configs" / "llama2-7b-metamath-multigpu.yaml")
    assert multi.schedule.batch_size * multi.schedule.grad_accum * 4 == 64  # 4 processes in accelerate-4gpu.yaml
    assert multi.run_defining()["bone"] == cfg.run_defining()["bone"]


@pytest.mark.parametrize("name,kind", [("accelerate-4gpu.yaml", "MULTI_GPU"), ("accelerate-4gpu-fsdp2.yaml", "FSDP"),
                                       ("accelerate-4gpu-zero3.yaml", "DEEPSPEED")])
def test_accelerate_configs_load_in_accelerate(name, kind):
    from accelerate.commands.config.config_args import ClusterConfig

    path = Path(__file__).parents[2] / "configs" / name
    acc = yaml.safe_load(path.read_text())
    assert acc["num_processes"] == 4 and acc["mixed_precision"] == "bf16"
    cluster = ClusterConfig.from_yaml_file(str(path))
    assert str(cluster.distributed_type).endswith(kind)
    if kind == "FSDP":
        assert cluster.fsdp_config["fsdp_version"] == 2
    if kind == "DEEPSPEED":  # bone.apply needs the whole base model in every process before ZeRO-3 partitions it
        assert cluster.deepspeed_config["zero_stage"] == 3 and cluster.deepspeed_config["zero3_init_flag"] is False
