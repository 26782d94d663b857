"""The lr schedule and the optimizer's parameter groups."""
from __future__ import annotations

import math

import pytest

from bone.train.optim import lr_factor


def test_lr_schedule():
    cos = [lr_factor(s, warmup=2, total=10, kind="cosine") for s in range(10)]
    assert cos[:2] == [0.5, 1.0] and cos[2] == 1.0 and cos[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert all(a >= b for a, b in zip(cos[1:], cos[2:]))
    assert [lr_factor(s, warmup=0, total=4, kind="linear") for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor(7, warmup=0, total=4, kind="constant") == 1.0


def test_build_puts_every_trainable_parameter_in_one_group_with_the_warmup_lr(make_llama):
    from bone import methods
    from bone.train import optim
    from bone.train.config import load_config

    cfg = load_config(None, ["bone.r=8", "optim.lr=1e-3", "schedule.warmup_steps=4"])
    method = methods.get("bone")
    model = method.apply(make_llama(), cfg)
    optimizer, schedule = optim.build(method, model, cfg, total_steps=10)
    trained = [p for _, p in method.trainable(model)]
    grouped = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len(trained) > 0 and {id(p) for p in grouped} == {id(p) for p in trained}
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(1e-3 / 4)]  # step 0 of 4 warmup steps
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 / 4)


@pytest.mark.parametrize("fused,can_fuse,want", [(True, True, True), (False, True, None), (True, False, None)])
def test_adamw_is_fused_unless_turned_off_or_the_launch_forbids_it(make_llama, fused, can_fuse, want):
    """optim.fused (default) picks torch's fused AdamW; DeepSpeed / FSDP2 launches (can_fuse=False) get the loop."""
    from bone import methods
    from bone.train import optim
    from bone.train.config import load_config

    cfg = load_config(None, ["bone.r=8", f"optim.fused={str(fused).lower()}"])
    method = methods.get("bone")
    optimizer, _ = optim.build(method, method.apply(make_llama(), cfg), cfg, total_steps=10, can_fuse=can_fuse)
    assert optimizer.defaults["fused"] is want
