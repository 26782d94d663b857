"""bone merge of an adapter trained on a quantized base: into the full-precision base (the cost reported)
or into the dequantized weights (checked against them), in the base's layout and dtypes."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import bone
from bone.errors import ConfigError
from bone.export import merge, probe_difference

pytest.importorskip("bitsandbytes")


def trained_on_nf4(model_dir, out):
    model = bone.apply(bone.load_model(model_dir, quantize="nf4"), bone.BoneConfig(r=16, variant="col"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in bone.bone_layers(model):
            layer.bone_block.copy_(torch.randn(layer.bone_block.shape, generator=g) * 0.05)
    return bone.save(model, out)


def test_both_merges_of_an_nf4_adapter(bf16_dir, tmp_path):
    adapter = trained_on_nf4(bf16_dir, tmp_path / "adapter")
    lines = []
    deq = merge(bf16_dir, adapter, tmp_path / "deq", quantize="nf4", dequantized=True, log=lines.append)
    full = merge(bf16_dir, adapter, tmp_path / "full", quantize="nf4", log=lines.append)
    assert "quantization_config" not in json.loads((deq / "config.json").read_text())
    assert (deq / "tokenizer.json").read_bytes() == (bf16_dir / "tokenizer.json").read_bytes()
    with safe_open(deq / "model.safetensors", "pt") as fh:
        assert {fh.get_slice(k).get_dtype() for k in fh.keys()} == {"BF16"}  # the base's dtype
    costs = [float(ln.split("= ")[1].split(":")[0]) for ln in lines if "(as trained" in ln]
    assert len(costs) == 2 and costs[0] < costs[1]  # the dequantized merge is the closer one to what was trained
    exact, scale = probe_difference(bf16_dir, adapter, deq, "nf4", dequantized=True)
    assert exact <= 2e-2 * (1 + scale)
    assert probe_difference(bf16_dir, adapter, full)[0] <= 2e-2 * (1 + scale)


def test_dequantized_merge_needs_the_quantization(bf16_dir, tmp_path):
    with pytest.raises(ConfigError, match="needs the quantization the adapter was trained with"):
        merge(bf16_dir, tmp_path, tmp_path / "out", dequantized=True)
    with pytest.raises(ConfigError, match="quantize='nf5'"):
        merge(bf16_dir, tmp_path, tmp_path / "out", quantize="nf5")
    assert not (tmp_path / "out").exists()
