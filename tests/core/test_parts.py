"""Trained parts (BoneConfig.train_parts, bone.parts): which parameters a pattern picks, the refusals,
the lifecycle (disabled / merge / unmerge / unload give the trained or the original values back
exactly), the adapter-folder layout, and PEFT's modules_to_save in both directions."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import bone
from bone.errors import AdapterError, ConfigError

sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "rwkv"))
from rwkv_testlib import make_x060, make_x070  # noqa: E402

IDS = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(0))


def rwkv(version="x060"):
    from bone.models.rwkv.checkpoint import RWKVForCausalLM, config_from_state_dict

    sd = {"x060": make_x060, "x070": make_x070}[version]()
    model = RWKVForCausalLM(config_from_state_dict(sd))
    model.load_state_dict(sd)
    return model.eval()


def perturb(model, seed=1, std=0.05):
    """Random blocks and parts (a trained adapter stand-in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in bone.trainable_parameters(model):
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_substrings_pick_what_rwkv_peft_trains():
    model = rwkv("x060")
    everything = [n for n, _ in model.named_parameters()]
    bone.apply(model, bone.BoneConfig(r=16, variant="shard", train_parts=["time", "ln"]))
    picked = bone.parts.names(model)
    assert picked == [n for n in everything if "time" in n or "ln" in n]  # RWKV-PEFT's `part in name`, model order
    assert {"blocks.0.att.time_maa_x", "blocks.1.ffn.time_maa_r", "blocks.0.ln0.bias", "blocks.1.att.ln_x.weight",
            "ln_out.weight"} <= set(picked)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    blocks = {n for n in trainable if n.endswith(".bone_adapters.default.block")}
    assert trainable == blocks | set(picked) and len(blocks) == 16
    assert [id(p) for p in bone.trainable_parameters(model)[-len(picked):]] == [id(model.get_parameter(n)) for n in picked]


def test_a_regex_matches_whole_names():
    model = bone.apply(rwkv("x070"), bone.BoneConfig(r=16, train_parts=r"blocks\.\d+\.ln[12]\.weight"))
    assert bone.parts.names(model) == [f"blocks.{i}.ln{j}.weight" for i in range(2) for j in (1, 2)]


@pytest.mark.parametrize("parts, message", [
    (["time"], "'time' is not part of any parameter name"),  # x070 has no time_* parameters
    (["lnx"], r"close names: \[.*'ln_x'"),
    (r"blocks\.\d+\.x_q", "matches no parameter"),
    (["key"], "a parameter of the adapted layer blocks.0.att.key"),
    (r".*\.att\.output\.weight", "either adapted .* or trained in full"),
])
def test_bad_patterns_are_refused_and_change_nothing(parts, message):
    model = rwkv("x070")
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}
    with pytest.raises(ConfigError, match=message):
        bone.apply(model, bone.BoneConfig(r=16, train_parts=parts))
    assert not list(bone.bone_layers(model)) and bone.parts.names(model) == []
    assert all(torch.equal(p, before[n][0]) and p.requires_grad == before[n][1] for n, p in model.named_parameters())


def test_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="not a valid regex"):
        bone.BoneConfig(train_parts="ln(")
    with pytest.raises(ConfigError, match="non-empty strings"):
        bone.BoneConfig(train_parts=["ln", ""])
    assert bone.BoneConfig(train_parts=("time", "ln")).train_parts == ["ln", "time"]


def test_disabled_merge_unmerge_unload_give_both_models_back_exactly():
    base = rwkv("x060")
    want_base = logits(base)
    model = perturb(bone.apply(rwkv("x060"), bone.BoneConfig(r=16, variant="shard", train_parts=["time", "ln"])))
    trained = {n: model.get_parameter(n).detach().clone() for n in bone.parts.names(model)}
    want = logits(model)
    assert (want - want_base).abs().max() > 1e-2
    with bone.disabled(model):
        assert torch.equal(logits(model), want_base)  # originals swapped in, exactly
    assert torch.equal(logits(model), want)
    bone.merge(model)
    torch.testing.assert_close(logits(model), want, rtol=1e-5, atol=1e-5)
    bone.unmerge(model)  # the adapter is active again: the parts stay trained
    torch.testing.assert_close(logits(model), want, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(model.get_parameter(n), t) for n, t in trained.items())
    bone.unload(model)  # not merged: the base comes back, parts exactly
    sd, ref = model.state_dict(), base.state_dict()
    assert set(sd) == set(ref) and all(torch.equal(sd[n], ref[n]) for n in trained)
    assert not any(p.requires_grad for p in model.parameters()) and bone.parts.names(model) == []

    merged = perturb(bone.apply(rwkv("x060"), bone.BoneConfig(r=16, variant="shard", train_parts=["time", "ln"])))
    want = logits(merged)
    bone.unload(bone.merge(merged))  # merged: the adapted model stays, trained parts included
    torch.testing.assert_close(logits(merged), want, rtol=1e-5, atol=1e-5)


def test_folder_layout_and_round_trip(tmp_path):
    model = perturb(bone.apply(rwkv("x060"), bone.BoneConfig(r=16, variant="row", train_parts=["time", "ln"])))
    bone.save(model, tmp_path / "a")
    peft_cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    mts = peft_cfg["modules_to_save"]
    assert mts == ["blocks.0.ln1", "blocks.0.ln2", "blocks.0.ln0", "blocks.0.att.ln_x", "blocks.1.ln1", "blocks.1.ln2",
                   "blocks.1.att.ln_x", "ln_out"]  # whole modules, model order
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert "base_model.model.blocks.0.ln1.weight" in weights and "base_model.model.ln_out.bias" in weights
    rest = load_file(tmp_path / "a" / bone.parts.FILE)
    assert set(rest) == {n for n in bone.parts.names(model) if "time" in n}  # parameters of modules holding targets
    loaded = bone.load(rwkv("x060"), tmp_path / "a")
    assert bone.parts.names(loaded) == bone.parts.names(model)
    assert torch.equal(logits(loaded), logits(model))
    with bone.disabled(loaded):
        assert torch.equal(logits(loaded), logits(rwkv("x060")))  # the originals were the base's, not the file's

    (tmp_path / "a" / bone.parts.FILE).rename(tmp_path / "kept.safetensors")
    with pytest.raises(AdapterError, match=r"picks 44 parameter\(s\) of this model but the adapter holds 16 \(missing \['blocks.0.att.time_decay'"):
        bone.load(rwkv("x060"), tmp_path / "a")
    (tmp_path / "kept.safetensors").rename(tmp_path / "a" / bone.parts.FILE)

    plain = perturb(bone.apply(rwkv("x060"), bone.BoneConfig(r=16, variant="row")))
    bone.save(plain, tmp_path / "a")  # saved over: no stale parts file is left to be read back
    assert not (tmp_path / "a" / bone.parts.FILE).exists()
    assert bone.read(tmp_path / "a").parts == {}


def test_loading_parts_into_another_model_is_refused(tmp_path):
    model = perturb(bone.apply(rwkv("x060"), bone.BoneConfig(r=16, variant="shard", train_parts=["time_faaaa"])))
    bone.save(model, tmp_path / "a")
    from bone.models.rwkv.checkpoint import RWKVForCausalLM, config_from_state_dict

    other = RWKVForCausalLM(config_from_state_dict(make_x060(N=32)))  # same widths, 4 heads of 32: time_faaaa (4, 32)
    with pytest.raises(AdapterError, match=r"trained part blocks.0.att.time_faaaa has shape \(2, 64\), the model's has \(4, 32\)"):
        bone.load(other, tmp_path / "a")
    assert not list(bone.bone_layers(other)) and all(p.requires_grad for p in other.parameters())


def test_merge_state_dict_copies_parts_in_the_stored_dtype():
    sd = {"a.weight": torch.ones(4, 4, dtype=torch.bfloat16), "n.weight": torch.ones(4, dtype=torch.bfloat16)}
    cfg = bone.BoneConfig(r=2, variant="shard")
    new = bone.merge_state_dict(sd, cfg, {}, parts={"n.weight": torch.full((4,), 2.5)})
    assert new["n.weight"].dtype == torch.bfloat16 and torch.equal(new["n.weight"], torch.full((4,), 2.5, dtype=torch.bfloat16))
    assert new["a.weight"] is sd["a.weight"] and torch.equal(sd["n.weight"], torch.ones(4, dtype=torch.bfloat16))
    with pytest.raises(AdapterError, match="does not have"):
        bone.merge_state_dict(sd, cfg, {}, parts={"m.weight": torch.ones(4)})
    with pytest.raises(AdapterError, match="both a block and a trained value"):
        bone.merge_state_dict(sd, cfg, {"a": torch.zeros(2, 4)}, parts={"a.weight": torch.ones(4, 4)})


def test_peft_loads_whole_module_parts_as_modules_to_save(make_llama, tmp_path):
    peft = pytest.importorskip("peft")
    model = perturb(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="shard", train_parts=["lm_head", "model.norm"])))
    assert bone.parts.names(model) == ["model.norm.weight", "lm_head.weight"]
    bone.save(model, tmp_path / "a")
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["modules_to_save"] == ["model.norm", "lm_head"]
    assert not (tmp_path / "a" / bone.parts.FILE).exists()
    pm = peft.PeftModel.from_pretrained(make_llama(), tmp_path / "a").eval()
    torch.testing.assert_close(logits(pm, IDS % 128), logits(model, IDS % 128), rtol=1e-5, atol=1e-5)
    with pm.disable_adapter():  # PEFT keeps the original module, as bone keeps the original values
        base = logits(pm, IDS % 128)
    with bone.disabled(model):
        torch.testing.assert_close(logits(model, IDS % 128), base, rtol=1e-6, atol=1e-6)


def test_bone_reads_peft_modules_to_save(make_llama, tmp_path):
    peft = pytest.importorskip("peft")
    cfg = peft.MissConfig(r=16, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head", "norm"])
    pm = peft.get_peft_model(make_llama(), cfg).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    pm.save_pretrained(tmp_path / "p")
    ours = bone.load(make_llama(), tmp_path / "p")
    assert set(bone.parts.names(ours)) == {"lm_head.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{n}.weight" for i in range(2) for n in ("input_layernorm", "post_attention_layernorm")}
    torch.testing.assert_close(logits(ours, IDS % 128), logits(pm, IDS % 128), rtol=1e-5, atol=1e-5)


def test_trained_parts_go_with_a_single_adapter():
    """Parts are base parameters shared by every adapter: a second, named adapter is refused next to an
    adapter with parts, and parts are refused next to other adapters; nothing changes on refusal."""
    with_parts = bone.BoneConfig(r=16, variant="shard", train_parts=["ln"])
    model = perturb(bone.apply(rwkv("x060"), with_parts))
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(bone.errors.UsageError, match=r"trains base parameters \(train_parts, e\.g\. .*ln.*\).*fresh base model.*the only --adapter"):
        bone.apply(model, bone.BoneConfig(r=16, variant="shard"), name="second")
    assert bone.adapter_names(model) == ["default"] and set(model.state_dict()) == set(before)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())

    plain = bone.apply(rwkv("x060"), bone.BoneConfig(r=16, variant="shard"), name="a")
    names = dict(plain.named_parameters())
    with pytest.raises(bone.errors.UsageError, match=r"train_parts \(\d+ parameter\(s\), e\.g\. .*\) go with a single adapter"):
        bone.apply(plain, with_parts, name="b")
    assert bone.adapter_names(plain) == ["a"] and bone.parts.names(plain) == []
    assert dict(plain.named_parameters()).keys() == names.keys()


@pytest.mark.parametrize("how", ["unload", "delete"])
def test_removing_the_only_adapter_by_name_gives_the_parts_back(how):
    base = rwkv("x060")
    model = perturb(bone.apply(rwkv("x060"), bone.BoneConfig(r=16, variant="shard", train_parts=["ln"]), name="only"))
    assert bone.parts.names(model)
    bone.unload(model, "only") if how == "unload" else bone.delete_adapter(model, "only")
    assert bone.parts.names(model) == [] and not any(p.requires_grad for p in model.parameters())
    assert torch.equal(logits(model), logits(base))  # not merged: the originals are back, exactly


def test_unloading_the_merged_only_adapter_by_name_keeps_the_trained_parts():
    model = perturb(bone.apply(rwkv("x060"), bone.BoneConfig(r=16, variant="shard", train_parts=["ln"]), name="only"))
    want = logits(model)
    bone.unload(bone.merge(model), "only")
    assert bone.parts.names(model) == [] and not list(bone.bone_layers(model))
    torch.testing.assert_close(logits(model), want, rtol=1e-5, atol=1e-5)
