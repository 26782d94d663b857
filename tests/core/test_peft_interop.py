"""Adapter directories interoperate with Hugging Face PEFT (0.21 MiSS) in both directions, and legacy
PEFT Bone directories written by the real PEFT 0.18.1 (fixtures) load with identical outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import bone

peft = pytest.importorskip("peft")
FIXTURES = Path(__file__).parent.parent / "fixtures"
PEFT_INIT = {"col": "bat", "shard": True, "mini": "mini"}


def logits(model, ids):
    return model(input_ids=ids).logits


@pytest.mark.parametrize("variant", ["col", "shard", "mini"])
def test_bone_to_peft(variant, make_llama, randomize, tmp_path):
    ids = torch.randint(0, 128, (2, 7))
    model = randomize(bone.apply(make_llama(), bone.BoneConfig(r=16, variant=variant, mini_r=8 if variant == "mini" else None)))
    expected = logits(model, ids)
    bone.save(model, tmp_path)
    peft_model = peft.PeftModel.from_pretrained(make_llama(), tmp_path).eval()
    torch.testing.assert_close(logits(peft_model, ids), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["col", "shard", "mini"])
def test_peft_to_bone_same_blocks_same_outputs(variant, make_llama, tmp_path):
    ids = torch.randint(0, 128, (2, 7))
    pcfg = peft.MissConfig(r=16, init_weights=PEFT_INIT[variant], mini_r=8,
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    pm = peft.get_peft_model(make_llama(), pcfg).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "miss_block" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    expected = logits(pm, ids)
    pm.save_pretrained(tmp_path)
    model = bone.load(make_llama(), tmp_path)
    assert bone.adapter_config(model).variant == variant
    torch.testing.assert_close(logits(model, ids), expected, rtol=1e-5, atol=1e-5)


def test_row_is_refused_by_peft_not_misread(make_llama, randomize, tmp_path):
    model = randomize(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="row")))
    bone.save(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "BONE_ROW"
    with pytest.raises(KeyError, match="BONE_ROW"):
        peft.PeftModel.from_pretrained(make_llama(), tmp_path)
    assert bone.adapter_config(bone.load(make_llama(), tmp_path)).variant == "row"


def test_saved_layout_keys_and_shapes(make_llama, tmp_path):
    bone.save(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="col")), tmp_path)
    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.miss_block"].shape == (4, 16, 16)
    assert tensors["base_model.model.model.layers.0.mlp.down_proj.miss_block"].shape == (4, 16, 16)
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "MISS" and cfg["init_weights"] == "bat" and cfg["r"] == 16
    assert cfg["task_type"] == "CAUSAL_LM" and len(cfg["target_modules"]) == 14
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


class LegacyNet(torch.nn.Module):
    """The network tests/fixtures/make_legacy_bone.py adapted with PEFT 0.18.1."""

    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(16, 32)
        self.v_proj = torch.nn.Linear(32, 16)

    def forward(self, x):
        return self.v_proj(torch.tanh(self.q_proj(x)))


@pytest.mark.parametrize("name,variant", [("legacy_bone_bat", "col"), ("legacy_bone_bone", "shard")])
def test_legacy_peft_bone_dirs(name, variant):
    d = FIXTURES / name
    assert json.loads((d / "adapter_config.json").read_text())["peft_type"] == "BONE"
    expected = load_file(d / "expected.safetensors")
    net = LegacyNet()
    net.load_state_dict({k[len("base."):]: v for k, v in expected.items() if k.startswith("base.")})
    bone.load(net, d)
    assert bone.adapter_config(net).variant == variant and bone.adapter_config(net).r == 4
    torch.testing.assert_close(net(expected["x"]), expected["y"], rtol=1e-5, atol=1e-5)
