"""TrainConfig range checks: every numeric field is checked when the config is read (before any
model or data is loaded), with one line naming the key, the rule and the value; the edge of each
range is accepted."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from bone.errors import ConfigError
from bone.train import TrainConfig, load_config
from bone.train.config import RESUME_MAY_CHANGE

# (override, the message it gets); every numeric field of every section appears at least once
REFUSED = [
    ("data.train_limit=0", "data.train_limit must be >= 1 or null, got 0"),
    ("data.eval_limit=0", "data.eval_limit must be >= 1 or null, got 0"),
    ("data.max_length=1", "data.max_length must be >= 2, got 1"),
    ("optim.lr=0", "optim.lr must be > 0 and finite, got 0.0"),
    ("optim.lr=-1e-4", "optim.lr must be > 0 and finite, got -0.0001"),
    ("optim.lr=inf", "optim.lr must be > 0 and finite, got inf"),
    ("optim.lr=nan", "optim.lr must be > 0 and finite, got nan"),
    ("optim.weight_decay=-0.1", "optim.weight_decay must be >= 0 and finite, got -0.1"),
    ("optim.weight_decay=nan", "optim.weight_decay must be >= 0 and finite, got nan"),
    ("optim.beta1=1", "optim.beta1 must be in [0, 1), got 1.0"),
    ("optim.beta1=-0.1", "optim.beta1 must be in [0, 1), got -0.1"),
    ("optim.beta2=1.5", "optim.beta2 must be in [0, 1), got 1.5"),
    ("optim.beta2=nan", "optim.beta2 must be in [0, 1), got nan"),
    ("optim.eps=0", "optim.eps must be > 0 and finite, got 0.0"),
    ("optim.eps=inf", "optim.eps must be > 0 and finite, got inf"),
    ("optim.max_grad_norm=-1", "optim.max_grad_norm must be > 0 (clip to that norm) or null (no clipping), got -1.0"),
    ("optim.max_grad_norm=0", "optim.max_grad_norm must be > 0"),
    ("optim.max_grad_norm=nan", "optim.max_grad_norm must be > 0"),
    ("optim.skip_nonfinite=-1", "optim.skip_nonfinite must be >= 0, got -1"),
    ("optim.parts_lr=0", "optim.parts_lr must be > 0 and finite, or null, got 0.0"),
    ("optim.parts_lr=inf", "optim.parts_lr must be > 0 and finite, or null, got inf"),
    ("optim.weight_decay=60000", "optim.lr * optim.weight_decay must be < 1 (AdamW multiplies the weights by 1 - lr * weight_decay"),
    ("schedule.epochs=0", "schedule.epochs must be >= 1, got 0"),
    ("schedule.max_steps=0", "schedule.max_steps must be >= 1 or null, got 0"),
    ("schedule.batch_size=0", "schedule.batch_size must be >= 1, got 0"),
    ("schedule.grad_accum=0", "schedule.grad_accum must be >= 1, got 0"),
    ("schedule.warmup_steps=-1", "schedule.warmup_steps must be >= 0, got -1"),
    ("schedule.seed=-1", "schedule.seed must be in [0, 2147483648), got -1"),
    ("schedule.seed=2147483648", "schedule.seed must be in [0, 2147483648)"),
    ("checkpointing.every=0", "checkpointing.every must be >= 1, got 0"),
    ("checkpointing.keep=0", "checkpointing.keep must be >= 1, got 0"),
    ("logging.every=0", "logging.every must be >= 1, got 0"),
    ("eval.batch_size=0", "eval.batch_size must be >= 1, got 0"),
    ("eval.max_new_tokens=0", "eval.max_new_tokens must be >= 1, got 0"),
    ("bone.r=0", "BoneConfig.r must be a positive int, got 0"),
    ("bone.mini_r=0", "BoneConfig.mini_r must be a positive int, got 0"),
    ("bone.dropout=1", "BoneConfig.dropout must be in [0, 1), got 1.0"),
    ("bone.chunk_size=0", "BoneConfig.chunk_size must be a positive int, got 0"),
    ("lora.r=0", 'lora.r must be >= 1 or "auto", got 0'),
    ("lora.r=big", 'lora.r must be >= 1 or "auto", got big'),
    ("lora.alpha=0", "lora.alpha must be > 0 and finite, or null, got 0.0"),
    ("lora.alpha=nan", "lora.alpha must be > 0 and finite, or null, got nan"),
    ("lora.dropout=1", "lora.dropout must be in [0, 1), got 1.0"),
]

ACCEPTED = ["data.train_limit=1", "data.eval_limit=null", "data.max_length=2", "optim.lr=1e-30", "optim.weight_decay=0",
            "optim.beta1=0", "optim.beta2=0.9999", "optim.eps=1e-30", "optim.max_grad_norm=null", "optim.max_grad_norm=1e-6",
            "optim.skip_nonfinite=0", "schedule.max_steps=1", "schedule.warmup_steps=0", "schedule.seed=0",
            "schedule.seed=2147483647", "checkpointing.every=1", "eval.batch_size=1", "eval.max_new_tokens=1",
            "optim.lr=1e38", "lora.r=auto", "lora.r=1", "lora.alpha=null", "lora.dropout=0"]  # finite: what AdamW can do with it is the guard's to say at step 1


def numeric_keys(cls=TrainConfig, prefix=""):
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            yield from numeric_keys(tp, prefix + name + ".")
        elif {int, float} & set(typing.get_args(tp) or (tp,)):
            yield prefix + name


@pytest.mark.parametrize("override, message", REFUSED)
def test_out_of_range_values_are_refused_when_read(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override", ACCEPTED)
def test_the_edges_of_each_range_are_accepted(override):
    load_config(None, [override])


def test_every_numeric_field_has_a_refused_value():
    checked = {o.split("=")[0] for o, _ in REFUSED}
    assert set(numeric_keys()) - checked == set()


def test_a_yaml_file_is_checked_the_same(tmp_path):
    (tmp_path / "c.yaml").write_text("optim:\n  max_grad_norm: -1\n")
    with pytest.raises(ConfigError, match=r"^optim.max_grad_norm must be > 0"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("optim:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=r"^optim.lr must be > 0 and finite, got nan"):
        load_config(tmp_path / "d.yaml")


def test_skip_nonfinite_may_change_on_resume_and_nothing_else_of_optim():
    base = load_config(None, [])
    assert load_config(None, ["optim.skip_nonfinite=3"]).run_defining() == base.run_defining()
    assert load_config(None, ["optim.lr=1e-3"]).run_defining() != base.run_defining()
    assert RESUME_MAY_CHANGE == ("schedule.batch_size", "schedule.grad_accum", "optim.skip_nonfinite")
