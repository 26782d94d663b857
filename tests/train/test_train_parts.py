"""bone train with trained parts (bone.train_parts): their own AdamW group at optim.parts_lr, saved
with the adapter (PEFT loads them), an interrupted run resumes exactly, bad settings refused first."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import bone
from bone.errors import ConfigError
from bone.train.trainer import Trainer
from tiny import config

PARTS = {"bone.train_parts": "[lm_head, norm]", "bone.variant": "shard"}


def run(cfg, **kw):
    trainer = Trainer(cfg, **{k: kw.pop(k) for k in ("resume",) if k in kw}).setup()
    return trainer, trainer.run(**kw)


def test_parts_train_in_their_own_group_and_load_in_bone_and_peft(model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    trainer, code = run(config(model_dir, out, **PARTS, **{"optim.parts_lr": 3e-4, "schedule.max_steps": 3}))
    assert code == 0
    groups = trainer.optimizer.optimizer.param_groups
    parts = bone.parts.names(trainer.model)
    assert len(parts) == 6 and parts[-1] == "lm_head.weight"  # 2 x 2 layer norms, the final norm, the head
    assert [g["initial_lr"] for g in groups] == [1e-3, 3e-4] and groups[1]["names"] == parts
    assert all(n.endswith(".block") for n in groups[0]["names"])
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["lr"] == 1e-3 for r in rows[:1])
    peft_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(peft_cfg["modules_to_save"]) == sorted(n[: -len(".weight")] for n in parts)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    saved = load_file(out / "adapter" / "adapter_model.safetensors")
    head = saved["base_model.model.lm_head.weight"]
    assert not torch.equal(head, base.lm_head.weight)  # trained
    ids = torch.arange(3, 19).reshape(2, 8)
    ours = bone.load(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter").eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, peft(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def test_interrupted_run_with_two_groups_resumes_exactly(model_dir, tmp_path):
    extra = {**PARTS, "optim.parts_lr": 3e-4, "checkpointing.every": 100}
    run(config(model_dir, tmp_path / "full", **extra))
    part = config(model_dir, tmp_path / "part", **extra)
    assert run(part, stop_at=3)[1] == 0
    state = torch.load(tmp_path / "part" / "checkpoints" / "step-000003" / "optimizer.pt", weights_only=True)
    assert [len(g["names"]) for g in state["param_groups"]] == [14, 6]
    trainer, code = run(part, resume="latest")
    assert code == 0 and trainer.step == 6
    for name in ("adapter_model.safetensors",):
        a, b = load_file(tmp_path / "full" / "adapter" / name), load_file(tmp_path / "part" / "adapter" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise, parts included


def test_bad_settings_are_refused_before_training(model_dir, tmp_path):
    with pytest.raises(ConfigError, match="optim.parts_lr is the learning rate of bone.train_parts, which is empty"):
        config(model_dir, tmp_path / "a", **{"optim.parts_lr": 1e-4})
    with pytest.raises(ConfigError, match="'norn' is not part of any parameter name.*close names: .*'norm'"):
        Trainer(config(model_dir, tmp_path / "b", **{"bone.train_parts": "[norn]"})).setup()
    with pytest.raises(ConfigError, match="AdamW updates of size optim.lr are far below torch.bfloat16's resolution"):
        Trainer(config(model_dir, tmp_path / "c", **PARTS, **{"model.dtype": "bfloat16"})).setup()
    assert not any((tmp_path / d).exists() for d in "abc")
