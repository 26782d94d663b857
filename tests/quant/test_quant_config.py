"""Bad input around quantization: one clear line, nothing changed (bone.quant.config, bone.quant.bnb,
bone.quant.convert)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import bone
from bone.errors import BoneError, ConfigError, MissingDependencyError, ModelError
from bone.quant import QuantConfig, parse


def test_parse_accepts_names_and_configs():
    assert parse(None) is None
    assert parse("nf4") == QuantConfig("nf4")
    assert parse("int8", torch.bfloat16) == QuantConfig("int8", compute_dtype="bfloat16")
    assert parse(QuantConfig("fp4", double_quant=False), "float16").compute_dtype == "float16"
    assert QuantConfig("nf4").bits == 4 and QuantConfig("int8").bits == 8


@pytest.mark.parametrize("args,match", [
    (("int4",), r"quantize='int4' is not a quantization bone knows; choose one of \['fp4', 'int8', 'nf4'\]"),
    ((4,), r"quantize must be one of"),
    ((None, "bfloat16"), r"compute_dtype applies to quantized loading only"),
    (("nf4", torch.float64), r"compute_dtype='float64'; use one of"),
    (("nf4", "half"), r"compute_dtype='half'; use one of"),
])
def test_bad_values_fail_in_one_line(args, match):
    with pytest.raises(ConfigError, match=match) as err:
        parse(*args)
    assert "\n" not in str(err.value)


def test_load_model_rejects_a_bad_quantize_value_before_loading(tmp_path):
    with pytest.raises(ConfigError, match="quantize='q4'"):
        bone.load_model(tmp_path / "does-not-exist", quantize="q4")


def test_import_bone_does_not_import_bitsandbytes():
    code = "import sys, bone, bone.quant; print('bitsandbytes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_bitsandbytes_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what an uninstalled package looks like to import
    with pytest.raises(MissingDependencyError) as err:
        bone.load_model(tmp_path / "m", quantize="nf4")
    msg = str(err.value)
    assert "\n" not in msg and "needs the `bitsandbytes` package" in msg and 'pip install "bitsandbytes>=0.50"' in msg
    assert isinstance(err.value, BoneError)
    model = nn.Sequential(nn.Linear(64, 64))  # plain models keep working without bitsandbytes
    bone.apply(model, bone.BoneConfig(r=16, target_modules=["0"]))


def test_quantize_linears_refuses_layers_it_cannot_quantize():
    pytest.importorskip("bitsandbytes")
    from bone.quant import quantize_linears

    model = nn.Sequential(nn.Linear(64, 64), nn.Embedding(10, 64))
    with pytest.raises(ModelError, match=r"cannot quantize 2 layer\(s\): \['1 \(Embedding\)', 'x \(no such module\)'\]"):
        quantize_linears(model, ["0", "1", "x"], QuantConfig("nf4"))
    assert type(model[0]) is nn.Linear  # nothing changed
    assert quantize_linears(model, ["0"], QuantConfig("int8")) == ["0"]
    assert type(model[0]).__name__ == "Linear8bitLt"


def test_dequantize_needs_a_quantized_model():
    pytest.importorskip("bitsandbytes")
    with pytest.raises(ModelError, match="no quantized layers"):
        bone.quant.dequantize(nn.Sequential(nn.Linear(4, 4)))
