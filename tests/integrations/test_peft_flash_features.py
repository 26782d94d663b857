"""What PEFT does stays PEFT's under bone.flash: save_pretrained / from_pretrained (the same files),
gradient checkpointing (reentrant or not, dropout masks replayed), torch.compile, deepcopy."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

import bone
from bone.integrations import flashed_layers
from test_peft_flash import assert_same_step, step

peft = pytest.importorskip("peft")
IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("variant", ["col", "shard", "mini"])
def test_save_and_load_are_peft_s(variant, make_peft, make_llama, tmp_path, node_log):
    model = make_peft(variant).eval()
    want = model(input_ids=IDS).logits
    model.save_pretrained(tmp_path / "plain")
    bone.flash(model)
    model.save_pretrained(tmp_path / "flashed")
    plain, flashed = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("plain", "flashed"))
    assert plain.keys() == flashed.keys() and all(torch.equal(plain[k], flashed[k]) for k in plain)
    assert (tmp_path / "plain" / "adapter_config.json").read_text() == (tmp_path / "flashed" / "adapter_config.json").read_text()
    loaded = peft.PeftModel.from_pretrained(make_llama(), tmp_path / "flashed", is_trainable=True)  # to be trained on
    bone.flash(loaded.eval())
    log = node_log(loaded)
    torch.testing.assert_close(loaded(input_ids=IDS).logits, want, rtol=1e-5, atol=1e-5)
    assert log.kernel_calls() == 14


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("variant,dropout", [("col", 0.0), ("shard", 0.3)])
def test_gradient_checkpointing(variant, dropout, reentrant, make_peft):
    want = step(make_peft(variant, dropout=dropout), IDS)
    model = make_peft(variant, dropout=dropout)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
    if reentrant:
        model.enable_input_require_grads()  # what Trainer / TRL do for PEFT: reentrant needs an input that requires grad
    bone.flash(model)
    assert_same_step(step(model, IDS), want)


@pytest.mark.parametrize("variant,dropout", [("col", 0.0), ("shard", 0.3)])
def test_torch_compile(variant, dropout, make_peft):
    """Compiled flash equals compiled PEFT (aot_eager here: dynamo + AOTAutograd, no C++ build;
    under inductor a dropout mask comes from inductor's RNG in both, not eager's)."""
    torch._dynamo.reset()
    want = step(torch.compile(make_peft(variant, dropout=dropout), backend="aot_eager"), IDS)
    torch._dynamo.reset()
    model = bone.flash(make_peft(variant, dropout=dropout))
    assert_same_step(step(torch.compile(model, backend="aot_eager"), IDS), want)
    torch._dynamo.reset()


def test_deepcopy_keeps_flash(make_peft):
    model = bone.flash(make_peft("col"))
    twin = copy.deepcopy(model)
    assert flashed_layers(twin) == flashed_layers(model) and len(flashed_layers(twin)) == 14
    assert_same_step(step(twin, IDS), step(model, IDS))
