"""Full fine-tuning in bone's training loop: every weight trains, the result is a model folder of its
own (transformers loads it with its tokenizer), and an interrupted run resumes exactly."""
from __future__ import annotations

import os
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from bone import methods
from bone.errors import AdapterError
from bone.train.trainer import Trainer
from tiny import config

IDS = torch.arange(3, 19).reshape(2, 8)


def train(cfg, **kw):
    trainer = Trainer(cfg, **{k: kw.pop(k) for k in ("resume",) if k in kw}).setup()
    assert trainer.run(**kw) == 0
    return trainer


def test_every_weight_trains_and_the_folder_is_a_model(model_dir, tmp_path):
    out = tmp_path / "run"
    trainer = train(config(model_dir, out, method="full", **{"optim.lr": 1e-3}))
    model = trainer.acc.unwrap_model(trainer.model).eval()
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    assert len(trainer.params) == len(list(base.parameters())) == len(list(model.parameters()))
    assert methods.get("full").count(base, trainer.cfg) == sum(p.numel() for p in base.parameters())
    alone = AutoModelForCausalLM.from_pretrained(out / "adapter").eval()
    AutoTokenizer.from_pretrained(out / "adapter")  # the tokenizer came along
    with torch.no_grad():
        got, want, before = (m(input_ids=IDS).logits for m in (alone, model, base.eval()))
    assert torch.equal(got, want) and not torch.allclose(got, before, atol=1e-3)
    assert methods.owner(out / "adapter").name == "full"
    umask = os.umask(0o022)
    os.umask(umask)
    assert all(f.stat().st_mode & 0o777 == 0o666 & ~umask for f in (out / "adapter").iterdir())  # not save_pretrained's 0600
    loaded = methods.get("full").load(AutoModelForCausalLM.from_pretrained(model_dir), out / "adapter").eval()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=IDS).logits, want)


def test_resumed_equals_uninterrupted(model_dir, tmp_path):
    extra = {"method": "full", "optim.lr": 1e-3, "checkpointing.every": 100}
    train(config(model_dir, tmp_path / "full", **extra))
    part = config(model_dir, tmp_path / "part", **extra)
    assert train(part, stop_at=2).step == 2
    assert train(part, resume="latest").step == 6
    a, b = (load_file(tmp_path / d / "adapter" / "model.safetensors") for d in ("full", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_folder_of_another_model_is_refused(model_dir, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path / "run"
    train(config(model_dir, out, method="full"))
    other = LlamaForCausalLM(LlamaConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    try:
        methods.get("full").load(other, out / "adapter")
    except AdapterError as err:
        assert "does not fit" in str(err)
    else:
        raise AssertionError("a full fine-tuning folder of another model was loaded")
