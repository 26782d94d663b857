"""LoRA, PiSSA and DoRA from PEFT in bone's training loop: saved folders load in PEFT on the original
base with the trained model's logits (PiSSA after a resume too), lora.r: auto matches the Bone count,
and a missing PEFT fails before anything is loaded."""
from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from bone import methods
from bone.errors import AdapterError, MissingDependencyError
from bone.train.trainer import Trainer
from tiny import config

IDS = torch.arange(3, 19).reshape(2, 8)
WEIGHTS = "adapter/adapter_model.safetensors"


def train(cfg, **kw):
    trainer = Trainer(cfg, **{k: kw.pop(k) for k in ("resume",) if k in kw}).setup()
    assert trainer.run(**kw) == 0
    return trainer


def logits(model):
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def peft_logits(model_dir, adapter):
    from peft import PeftModel

    return logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(adapter)))


@pytest.mark.parametrize("method", ["lora", "pissa", "dora"])
def test_trains_in_the_same_loop_and_loads_in_peft_on_the_original_base(model_dir, tmp_path, method):
    out = tmp_path / method
    trainer = train(config(model_dir, out, method=method, **{"optim.lr": 1e-2}))
    trained = logits(trainer.acc.unwrap_model(trainer.model))
    assert torch.allclose(peft_logits(model_dir, out / "adapter"), trained, atol=1e-5)
    assert not torch.allclose(logits(AutoModelForCausalLM.from_pretrained(model_dir)), trained, atol=1e-3)
    assert methods.owner(out / "adapter").name == ("dora" if method == "dora" else "lora")  # PiSSA is saved as LoRA
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 6 and len(list((out / "checkpoints").iterdir())) == 2  # the shared loop's metrics and checkpoints


def test_pissa_resumed_equals_uninterrupted_and_still_loads_in_peft(model_dir, tmp_path):
    extra = {"method": "pissa", "optim.lr": 1e-2, "checkpointing.every": 100, "schedule.warmup_steps": 2}
    train(config(model_dir, tmp_path / "full", **extra))
    part = config(model_dir, tmp_path / "part", **extra)
    first = train(part, stop_at=3)
    assert first.step == 3 and not (tmp_path / "part" / "adapter").exists()
    resumed = train(part, resume="latest")
    assert resumed.step == 6
    a, b = load_file(tmp_path / "full" / WEIGHTS), load_file(tmp_path / "part" / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    trained = logits(resumed.acc.unwrap_model(resumed.model))
    assert torch.allclose(peft_logits(model_dir, tmp_path / "part" / "adapter"), trained, atol=1e-5)


def test_pissa_folder_is_what_peft_writes_for_the_original_weights(model_dir, tmp_path):
    """The conversion equals PEFT's own save_pretrained(path_initial_model_for_weight_conversion=...)."""
    import json

    from peft import get_peft_model_state_dict

    cfg = config(model_dir, tmp_path / "run", method="pissa")
    method = methods.get("pissa")
    model = method.apply(AutoModelForCausalLM.from_pretrained(model_dir), cfg)
    model.peft_config["default"].init_lora_weights = True  # as PEFT's docs do before saving the initial adapter
    model.save_pretrained(str(tmp_path / "pissa_init"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in method.trainable(model):
            p.add_(torch.randn(p.shape, generator=g) * 0.01)  # "training"
    model.peft_config["default"].init_lora_weights = "pissa"
    method.save(model, tmp_path / "ours")
    model.save_pretrained(str(tmp_path / "theirs"), path_initial_model_for_weight_conversion=str(tmp_path / "pissa_init"))
    ours, theirs = load_file(tmp_path / "ours" / "adapter_model.safetensors"), load_file(tmp_path / "theirs" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    a, b = (json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("ours", "theirs"))
    assert (a["r"], a["lora_alpha"], a["init_lora_weights"]) == (b["r"], b["lora_alpha"], b["init_lora_weights"]) == (8, 8, True)
    assert len(get_peft_model_state_dict(model)) == len(ours)


@pytest.mark.parametrize("method,bone", [("lora", {"bone.r": 8}), ("dora", {"bone.r": 8}), ("pissa", {"bone.r": 16}),
                                         ("lora", {"bone.variant": "shard", "bone.r": 4}),
                                         ("lora", {"bone.r": 8, "bone.target_modules": "[q_proj,v_proj]"})])
def test_auto_rank_has_the_closest_count_and_prints_both(model_dir, tmp_path, capsys, method, bone):
    cfg = config(model_dir, tmp_path / "run", method=method, **bone)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    bone_count = methods.get("bone").count(base, cfg)
    counts = {r: methods.get(method).count(base, config(model_dir, tmp_path / "run", method=method, **bone, **{"lora.r": r}))
              for r in range(1, 65)}
    best = min(counts, key=lambda r: (abs(counts[r] - bone_count), r))
    trainer = Trainer(cfg).setup()
    model = trainer.acc.unwrap_model(trainer.model)
    trained = sum(p.numel() for _, p in trainer.method.trainable(model))
    assert model.peft_config["default"].r == best and trained == counts[best] == methods.get(method).count(base, cfg)
    out = capsys.readouterr().out
    assert f"rank {best} trains {trained:,} parameters" in out and f"{bone_count:,}" in out


def test_fixed_rank_alpha_and_targets(model_dir, tmp_path):
    cfg = config(model_dir, tmp_path / "run", method="lora",
                 **{"lora.r": 3, "lora.alpha": 12, "lora.target_modules": "[q_proj,v_proj]"})
    model = methods.get("lora").apply(AutoModelForCausalLM.from_pretrained(model_dir), cfg)
    pc = model.peft_config["default"]
    assert (pc.r, pc.lora_alpha, sorted(pc.target_modules)) == (3, 12, ["q_proj", "v_proj"])
    names = [n for n, _ in methods.get("lora").trainable(model)]
    assert len(names) == 8 and all("q_proj" in n or "v_proj" in n for n in names)  # 2 layers x 2 modules x (A, B)


def test_missing_peft_fails_before_anything_is_loaded(model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what `import peft` meets when PEFT is not installed
    for method in ("lora", "pissa", "dora"):
        with pytest.raises(MissingDependencyError, match=r'pip install "bone\[compare\]"'):
            Trainer(config(model_dir, tmp_path / method, method=method))
        assert not (tmp_path / method).exists()
    Trainer(config(model_dir, tmp_path / "bone"))  # Bone itself needs no PEFT


def test_an_adapter_from_another_base_is_refused_before_peft_touches_the_model(model_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path / "run"
    train(config(model_dir, out, method="lora"))
    other = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(AdapterError, match="different base"):
        methods.get("lora").load(other, out / "adapter")
    assert not any("lora" in n for n, _ in other.named_parameters())


def test_a_checkpoint_of_another_rank_is_refused_on_resume(model_dir, tmp_path):
    out = tmp_path / "run"
    train(config(model_dir, out, method="lora", **{"lora.r": 2}))
    model = methods.get("lora").apply(AutoModelForCausalLM.from_pretrained(model_dir),
                                      config(model_dir, out, method="lora", **{"lora.r": 4}))
    with pytest.raises(AdapterError, match="does not fit"):
        methods.get("lora").read_trained(model, out / "adapter")
