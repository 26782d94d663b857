"""What bone.flash does not take keeps PEFT's own forward: per call (disabled, merged, switched
adapters, unfrozen base weights, input casting off) silently, and per layer at flash time
(several active adapters, a quantized base, an unverified PEFT, another layout, dtypes whose
arithmetic the kernels do not reproduce, trainable bias) with one warning naming the layers."""
from __future__ import annotations

import pytest
import torch

import bone
from bone.errors import ConfigError, UsageError
from bone.integrations import flashed_layers
from bone.integrations.peft import layout_problem, peft_problem
from miss_helpers import TARGETS, flash_warnings, miss_layers, randomize_miss

peft = pytest.importorskip("peft")
TOL = dict(rtol=1e-5, atol=1e-5)
IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))


def logits(model):
    return model(input_ids=IDS).logits.detach()


def test_disabled_and_merged_layers_run_peft_and_flash_resumes(make_peft, make_llama, node_log):
    model = make_peft("col").eval()
    flash_out = logits(bone.flash(model))
    log = node_log(model)
    with model.disable_adapter():
        torch.testing.assert_close(logits(model), logits(make_llama()), **TOL)
    assert log.kernel_calls() == 0 and len(log.nodes) == 14
    model.merge_adapter()
    torch.testing.assert_close(logits(model), flash_out, **TOL)
    assert log.kernel_calls() == 0
    model.unmerge_adapter()
    torch.testing.assert_close(logits(model), flash_out, **TOL)
    assert log.kernel_calls() == 14
    merged = model.merge_and_unload()
    assert miss_layers(merged) == []
    torch.testing.assert_close(logits(merged), flash_out, **TOL)


def test_switched_adapter_runs_peft_until_flashed_again(make_peft, node_log):
    model = make_peft("shard").eval()
    model.add_adapter("other", peft.MissConfig(r=16, target_modules=TARGETS))
    randomize_miss(model, seed=5)
    bone.flash(model)
    model.set_adapter("other")
    log = node_log(model)
    out = logits(model)
    assert log.kernel_calls() == 0
    bone.unflash(model)
    torch.testing.assert_close(logits(model), out, rtol=0, atol=0)  # it was PEFT's own path
    bone.flash(model)  # plans the now-active adapter
    torch.testing.assert_close(logits(model), out, **TOL)
    assert log.kernel_calls() == 14


def test_several_active_adapters_keep_peft_with_one_warning(make_peft):
    model = make_peft("shard").eval()
    model.add_adapter("other", peft.MissConfig(r=16, target_modules=["q_proj"]))
    randomize_miss(model, seed=5)
    model.base_model.set_adapter(["default", "other"])
    want = logits(model)
    _, messages = flash_warnings(bone.flash, model)
    assert len(messages) == 1
    assert "2 of 14" in messages[0] and "several active MiSS adapters" in messages[0]
    assert "model.layers.0.self_attn.q_proj" in messages[0] and "model.layers.1.self_attn.q_proj" in messages[0]
    assert len(flashed_layers(model)) == 12  # the other layers have one adapter with a block
    torch.testing.assert_close(logits(model), want, **TOL)


def test_quantized_base_layer_keeps_peft(make_llama):
    bnb = pytest.importorskip("bitsandbytes")
    model = make_llama()
    proj = model.model.layers[0].mlp.down_proj
    q = bnb.nn.Linear8bitLt(proj.in_features, proj.out_features, bias=False, has_fp16_weights=False)
    q.load_state_dict(proj.state_dict())
    model.model.layers[0].mlp.down_proj = q.to("cpu")
    pm = randomize_miss(peft.get_peft_model(model, peft.MissConfig(r=16, target_modules=TARGETS))).eval()
    want = logits(pm)
    _, messages = flash_warnings(bone.flash, pm)
    assert len(messages) == 1 and "quantized or non-Linear base layer: base_model.model.model.layers.0.mlp.down_proj" in messages[0]
    assert len(flashed_layers(pm)) == 13
    torch.testing.assert_close(logits(pm), want, **TOL)


def test_unverified_peft_version_keeps_every_layer_on_peft(make_peft, monkeypatch):
    model = make_peft("col")
    monkeypatch.setattr(peft, "__version__", "0.22.0")
    _, messages = flash_warnings(bone.flash, model)
    assert len(messages) == 1 and "14 of 14" in messages[0] and "PEFT 0.22.0 is not a version" in messages[0]
    assert flashed_layers(model) == []


def test_installed_peft_layout_is_the_verified_one(make_peft):
    """Fails when the environment's PEFT changes release or MissLinear layout: re-verify flash then
    (run this folder's equivalence tests) and add the release to bone.integrations.peft.VERIFIED."""
    assert peft_problem(peft.__version__) is None
    for variant in ("col", "shard", "mini"):
        for _, layer in miss_layers(make_peft(variant)):
            assert layout_problem(layer) is None


def test_changed_layout_keeps_peft(make_peft):
    model = make_peft("mini").eval()
    want = logits(model)
    layer = model.base_model.model.model.layers[1].mlp.up_proj
    del layer.miss_mini_r  # as if PEFT had renamed it
    _, messages = flash_warnings(bone.flash, model)
    assert len(messages) == 1 and "layout differs (no ['miss_mini_r'])" in messages[0]
    assert "model.layers.1.mlp.up_proj" in messages[0] and len(flashed_layers(model)) == 13
    layer.miss_mini_r = {"default": 8}
    torch.testing.assert_close(logits(model), want, **TOL)


def test_bf16_base_with_fp32_adapter(make_peft, node_log):
    """PEFT's default for a bf16 model keeps MiSS blocks in fp32 (autocast_adapter_dtype): bat
    computes in fp32 as the kernel does; a shard dropout mask drawn on fp32 x is left to PEFT."""
    model = make_peft("col", dtype=torch.bfloat16)
    assert {p.dtype for n, p in model.named_parameters() if "miss_block" in n} == {torch.float32}
    want = model(input_ids=IDS, labels=IDS).loss
    log = node_log(model)
    bone.flash(model)
    got = model(input_ids=IDS, labels=IDS).loss
    assert log.kernel_calls() == 14 and got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)  # bf16 logits: rounding of equal fp32 sums
    shard = make_peft("shard", dtype=torch.bfloat16, dropout=0.1)
    _, messages = flash_warnings(bone.flash, shard)
    assert len(messages) == 1 and "14 of 14" in messages[0] and "adapter dtype != base dtype" in messages[0]


def test_bat_adapter_narrower_than_base_keeps_peft(make_peft):
    model = make_peft("col")
    for _, layer in miss_layers(model)[:3]:
        layer.miss_block["default"].data = layer.miss_block["default"].data.bfloat16()
    _, messages = flash_warnings(bone.flash, model)
    assert len(messages) == 1 and "3 of 14" in messages[0] and "narrower than the base weight" in messages[0]


def test_trainable_bias_keeps_peft(make_mlp):
    model = randomize_miss(peft.get_peft_model(make_mlp(), peft.MissConfig(r=16, bias="all", target_modules=["fc1", "fc2"])))
    _, messages = flash_warnings(bone.flash, model)
    assert len(messages) == 1 and "trainable base weight or bias: base_model.model.fc1, base_model.model.fc2" in messages[0]


def test_unfrozen_weight_or_casting_off_falls_back_per_call(make_peft, node_log):
    from peft.helpers import disable_input_dtype_casting

    model = make_peft("shard").eval()
    want = logits(model)
    bone.flash(model)
    log = node_log(model)
    with disable_input_dtype_casting(model):
        torch.testing.assert_close(logits(model), want, **TOL)
    assert log.kernel_calls() == 0
    model.base_model.model.model.layers[0].mlp.up_proj.base_layer.weight.requires_grad_(True)
    torch.testing.assert_close(logits(model), want, **TOL)
    assert log.kernel_calls() == 13 and len(log.nodes) == 28


def test_bad_input_changes_nothing(make_peft, make_llama):
    with pytest.raises(UsageError, match="takes a PEFT model"):
        bone.flash("model")
    with pytest.raises(UsageError, match="found no PEFT MiSS layer in this LlamaForCausalLM"):
        bone.flash(make_llama())
    model = make_peft("col")
    with pytest.raises(ConfigError, match="chunk_size"):
        bone.flash(model, chunk_size=0)
    assert flashed_layers(model) == []
    assert bone.unflash(model) is model  # nothing flashed: a no-op
