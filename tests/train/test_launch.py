"""bone.train.launch against Accelerate's real launch plugins: the configs bone refuses (each with
its fix) and the DeepSpeed config it fills in. The plugins are the objects `accelerate launch`
builds from a config file; only the Accelerator around them is a plain namespace."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin

from bone.train.launch import check_launch, fill_deepspeed_config
from tiny import config


def accelerator(kind: DistributedType, *, deepspeed: DeepSpeedPlugin | None = None, fsdp=None, processes: int = 2):
    return SimpleNamespace(distributed_type=kind, num_processes=processes,
                           is_fsdp2=fsdp is not None and fsdp.fsdp_version == 2,
                           state=SimpleNamespace(deepspeed_plugin=deepspeed, fsdp_plugin=fsdp))


@pytest.fixture
def cfg(model_dir, tmp_path):
    return lambda **kw: config(model_dir, tmp_path / "run", **kw)


@pytest.mark.parametrize("kind", [DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU])
def test_plain_launches_pass(kind, cfg):
    check_launch(accelerator(kind), cfg())


def test_fsdp_needs_version_2_without_its_activation_checkpointing(cfg):
    check_launch(accelerator(DistributedType.FSDP, fsdp=FullyShardedDataParallelPlugin(fsdp_version=2)), cfg())
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        check_launch(accelerator(DistributedType.FSDP, fsdp=FullyShardedDataParallelPlugin(fsdp_version=1)), cfg())
    wrapped = FullyShardedDataParallelPlugin(fsdp_version=2, activation_checkpointing=True)
    with pytest.raises(ValueError, match="fsdp_activation_checkpointing: false.*model.gradient_checkpointing=true"):
        check_launch(accelerator(DistributedType.FSDP, fsdp=wrapped), cfg())


def test_a_plain_zero3_config_passes(cfg):
    plugin = DeepSpeedPlugin(zero_stage=3, zero3_init_flag=False)
    plugin.set_mixed_precision("bf16")  # what Accelerate does with mixed_precision=bf16
    check_launch(accelerator(DistributedType.DEEPSPEED, deepspeed=plugin), cfg(**{"schedule.precision": "bf16"}))


@pytest.mark.parametrize("plugin, precision, message", [
    (dict(zero_stage=3, zero3_init_flag=True), "fp32", "zero3_init_flag: false"),
    (dict(zero_stage=2, offload_optimizer_device="cpu"), "fp32", "offload_optimizer"),
    (dict(zero_stage=3, offload_param_device="cpu", zero3_init_flag=False), "fp32", "offload_param"),
    (dict(hf_ds_config={"zero_optimization": {"stage": 2}, "optimizer": {"type": "AdamW"}}), "fp32", "'optimizer' section"),
    (dict(hf_ds_config={"zero_optimization": {"stage": 2}, "scheduler": {"type": "WarmupLR"}}), "fp32", "'scheduler' section"),
    (dict(hf_ds_config={"zero_optimization": {"stage": 2}, "fp16": {"enabled": True}}), "fp32", "trains in fp16 but bone's schedule.precision is fp32"),
    (dict(hf_ds_config={"zero_optimization": {"stage": 2}, "bf16": {"enabled": "true"}}), "fp32", "trains in bf16 but bone's schedule.precision is fp32"),
    (dict(hf_ds_config={"zero_optimization": {"stage": 2}, "bf16": {"enabled": False}}), "bf16", "trains in fp32 but bone's schedule.precision is bf16"),
])
def test_deepspeed_configs_bone_cannot_honour_are_refused(cfg, plugin, precision, message):
    with pytest.raises(ValueError, match=message):
        check_launch(accelerator(DistributedType.DEEPSPEED, deepspeed=DeepSpeedPlugin(**plugin)), cfg(**{"schedule.precision": precision}))


def test_deepspeed_config_gets_bone_batch_accumulation_and_clipping(cfg):
    plugin = DeepSpeedPlugin(zero_stage=2, gradient_accumulation_steps=1)
    run = cfg(**{"schedule.batch_size": 3, "schedule.grad_accum": 5, "optim.max_grad_norm": 0.5})
    fill_deepspeed_config(accelerator(DistributedType.DEEPSPEED, deepspeed=plugin, processes=4), run)
    ds = plugin.deepspeed_config
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"], ds["gradient_clipping"]) == (3, 5, 60, 0.5)
    assert ds["zero_allow_untested_optimizer"] is True


def test_skipping_non_finite_steps_is_refused_under_deepspeed(cfg):
    """DeepSpeed's engine applies the update inside backward, before bone sees the loss: it cannot skip."""
    plugin = DeepSpeedPlugin(zero_stage=2)
    with pytest.raises(ValueError, match=r"optim.skip_nonfinite needs bone to look at the loss and gradients before the "
                                         r"update, but DeepSpeed's engine applies it inside backward: set optim.skip_nonfinite=0"):
        check_launch(accelerator(DistributedType.DEEPSPEED, deepspeed=plugin), cfg(**{"optim.skip_nonfinite": 2}))
    check_launch(accelerator(DistributedType.MULTI_CPU), cfg(**{"optim.skip_nonfinite": 2}))


QUIET_RUN = """
import sys
from bone.cli import main
code = main(sys.argv[1:])
print("deepspeed imported:", "deepspeed" in sys.modules)
sys.exit(code)
"""


def test_a_run_without_deepspeed_does_not_import_it(model_dir, tmp_path):
    """Importing deepspeed prints "Setting accelerator to CPU" on machines without a GPU; a run that does not
    use it must not import it (Accelerate's unwrap_model would: bone uses launch.unwrap)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import tiny

    pytest.importorskip("deepspeed")  # installed here: the run must still leave it alone
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"), "CUDA_VISIBLE_DEVICES": ""}
    args = tiny.overrides(model_dir, tmp_path / "run", **{"schedule.max_steps": 2})
    r = subprocess.run([sys.executable, "-c", QUIET_RUN, "train", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "deepspeed imported: False" in r.stdout and "Setting accelerator" not in r.stdout + r.stderr
