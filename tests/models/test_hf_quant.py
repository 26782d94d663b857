"""Hugging Face folders loaded quantized (bone.load_model(quantize=...), transformers' BitsAndBytesConfig):
train -> save -> load on a full-precision base -> merge, PEFT, the repacking trap, refused folders."""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from torch import nn

import bone
import tiny
from bone.errors import ConfigError, ModelError
from bone.quant import packing

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny.make_model_dir(tmp_path_factory.mktemp("tiny-llama"))


def logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


IDS = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("method,cls", [("nf4", "Linear4bit"), ("fp4", "Linear4bit"), ("int8", "Linear8bitLt")])
def test_quantized_load_keeps_head_and_embeddings(model_dir, method, cls):
    model = bone.load_model(model_dir, quantize=method, compute_dtype=torch.float32)
    kinds = {n: type(m).__name__ for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert kinds.pop("lm_head") == "Linear" and set(kinds.values()) == {cls} and len(kinds) == 14
    assert type(model.model.embed_tokens) is nn.Embedding
    if method != "int8":
        q = model.model.layers[0].mlp.down_proj
        assert q.weight.quant_state.quant_type == method and q.weight.quant_state.nested  # double quant by default
        assert q.compute_dtype == torch.float32 and q.support_avx512bf16_for_cpu is False  # no CPU repacking
    full = bone.load_model(model_dir, dtype=torch.float32)
    scale = logits(full, IDS).abs().max()
    assert 0 < (logits(model, IDS) - logits(full, IDS)).abs().max() < 0.5 * scale  # quantized, and still the model


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_train_save_load_full_precision_merge(model_dir, method, tmp_path):
    """eval -> train a few steps -> eval -> save; the adapter is ordinary: it loads on the quantized base
    (same outputs), on a full-precision base (bone and PEFT agree), and merges into the dequantized weights."""
    peft = pytest.importorskip("peft")
    model = bone.load_model(model_dir, quantize=method)
    before = logits(model, IDS)  # an evaluation before training, as bone train does
    bone.apply(model, bone.BoneConfig(r=16, variant="col"))
    opt = torch.optim.AdamW(bone.trainable_parameters(model), lr=1e-2)
    model.train()
    losses = []
    for _ in range(4):
        loss = model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    trained = logits(model, IDS)
    assert (trained - before).abs().max() > 1e-2
    bone.save(model, tmp_path / "adapter")

    again = bone.load(bone.load_model(model_dir, quantize=method), tmp_path / "adapter")
    torch.testing.assert_close(logits(again, IDS), trained, rtol=0, atol=0)

    on_full = logits(bone.load(bone.load_model(model_dir, dtype=torch.float32), tmp_path / "adapter"), IDS)
    peft_model = peft.PeftModel.from_pretrained(bone.load_model(model_dir, dtype=torch.float32), tmp_path / "adapter")
    torch.testing.assert_close(logits(peft_model, IDS), on_full, rtol=1e-5, atol=1e-5)
    assert 0 < (on_full - trained).abs().max() < 0.5 * trained.abs().max()  # the quantization error, nothing more

    bone.quant.dequantize(model)
    assert not bone.quant.is_quantized(model) and not hasattr(model.config, "quantization_config")
    bone.merge(model)
    torch.testing.assert_close(logits(model, IDS), trained, rtol=1e-5, atol=1e-5)


def test_model_evaluated_by_transformers_before_bone(model_dir):
    """The repacking trap: transformers' own quantized model evaluated once (bitsandbytes repacks every 4-bit
    layer on this CPU, and backward then runs through an op without gradient: silently wrong); bone.apply
    puts the layers back, so eval -> train -> eval -> merge works, for the adapted and unadapted layers."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=qcfg, dtype=torch.float32)
    logits(model, IDS)
    if not packing.is_repacked(model.model.layers[0].mlp.up_proj.weight):
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes does not repack here")
    no_grad_op = "gemv_4bit: an autograd kernel was not registered"
    with pytest.warns(UserWarning, match=no_grad_op):  # what bone train would hit without the fix
        model.train()(input_ids=IDS, labels=IDS).loss.backward()
    model.zero_grad()
    bone.apply(model, bone.BoneConfig(r=16, target_modules=["q_proj", "v_proj"]))
    assert not any(packing.is_repacked(m.weight) for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
    opt = torch.optim.AdamW(bone.trainable_parameters(model), lr=1e-2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=f".*{no_grad_op}")
        for _ in range(2):
            model.train()(input_ids=IDS, labels=IDS).loss.backward()
            opt.step()
            opt.zero_grad()
        trained = logits(model, IDS)
        assert not any(packing.is_repacked(m.weight) for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))
        model.train()(input_ids=IDS, labels=IDS).loss.backward()  # train after eval still works
    bone.quant.dequantize(model)
    bone.merge(model)
    torch.testing.assert_close(logits(model, IDS), trained, rtol=1e-5, atol=1e-5)


def test_layers_the_blocksize_does_not_divide_stay_full_precision(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=300, hidden_size=96, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"kept 6 layer\(s\) in full precision because their in_features is not a "
                                         r"multiple of the 4-bit blocksize 64.*q_proj"):
        model = bone.load_model(tmp_path, quantize="nf4")
    kinds = {n.split(".")[-1]: type(m).__name__ for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert kinds == {"q_proj": "Linear", "k_proj": "Linear", "v_proj": "Linear", "o_proj": "Linear",
                     "gate_proj": "Linear", "up_proj": "Linear", "down_proj": "Linear4bit", "lm_head": "Linear"}


def test_folders_quantized_elsewhere(model_dir, tmp_path):
    foreign = tmp_path / "gptq"
    shutil.copytree(model_dir, foreign)
    config = json.loads((foreign / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (foreign / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"quantized with 'gptq'; bone reads bitsandbytes 4-bit / 8-bit models only"):
        bone.load_model(foreign)

    saved = tmp_path / "nf4"  # a folder transformers saved with bitsandbytes 4-bit weights loads as it is
    bone.load_model(model_dir, quantize="nf4").save_pretrained(saved)
    with pytest.raises(ConfigError, match="already quantized by bitsandbytes; load it without quantize="):
        bone.load_model(saved, quantize="nf4")
    model = bone.load_model(saved)
    assert type(model.model.layers[0].self_attn.q_proj) is bnb.nn.Linear4bit
    reference = bone.load_model(model_dir, quantize="nf4")
    torch.testing.assert_close(logits(model, IDS), logits(reference, IDS), rtol=1e-5, atol=1e-5)
    bone.apply(model, bone.BoneConfig(r=16))


@pytest.mark.integration
def test_smollm2_trains_on_nf4():
    """The embedded SmolLM2-135M (in_features 576 / 1536: multiples of 64) loads in nf4, every projection
    quantized, and a col adapter takes a training step."""
    model = bone.load_model("smollm2-135m", quantize="nf4")
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 210  # 7 projections x 30 layers
    bone.apply(model, bone.BoneConfig(r=64, variant="col"))
    ids = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(0))
    model.train()(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for p in bone.trainable_parameters(model)]
    assert len(grads) == 210 and all(g is not None and torch.isfinite(g).all() for g in grads)
