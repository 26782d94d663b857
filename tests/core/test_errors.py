"""Every bad input gets a clear error and leaves the model (and files) unchanged."""
from __future__ import annotations

import json
import re

import pytest
import torch

import bone


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, snap):
    assert not list(bone.bone_layers(model))
    state = model.state_dict()
    assert set(state) == set(snap)
    for k, v in snap.items():
        assert torch.equal(state[k], v), k
    assert all(p.requires_grad for p in model.parameters())


def test_ragged_col_refused_in_one_line_per_shape_with_nearest_r(make_llama):
    model = make_llama()
    snap = snapshot(model)
    with pytest.raises(ValueError) as err:
        bone.apply(model, bone.BoneConfig(r=24, variant="col"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "cannot adapt 14 layer(s)" in msg  # 7 projections x 2 layers, of 4 shapes
    assert "q_proj, o_proj (4 layers, e.g. model.layers.0.self_attn.q_proj) (out=64, in=64)" in msg
    assert "k_proj, v_proj (4 layers, e.g. model.layers.0.self_attn.k_proj) (out=32, in=64)" in msg
    assert "gate_proj, up_proj (4 layers, e.g. model.layers.0.mlp.gate_proj) (out=128, in=64)" in msg
    assert "down_proj (2 layers, e.g. model.layers.0.mlp.down_proj) (out=64, in=128)" in msg
    assert "nearest r that works: 16" in msg  # 16 and 32 tie; the smaller wins
    assert_unchanged(model, snap)


def test_mini_r_not_dividing_out_names_the_nearest(make_llama):
    model = make_llama()
    with pytest.raises(ValueError, match=r"out_features divisible by mini_r=5, nearest mini_r that works: 4"):
        bone.apply(model, bone.BoneConfig(r=8, variant="mini", mini_r=5))


def test_shard_pads_ragged_inputs_instead_of_refusing(make_mlp):
    model = make_mlp("linear", d_in=30)  # 30 % 8 != 0
    x = torch.randn(4, 30)
    base = model(x)
    bone.apply(model, bone.BoneConfig(r=8, variant="shard", target_modules=["fc1"]))
    torch.testing.assert_close(model(x), base)


def test_targets_matching_nothing_list_available_linears(make_llama):
    model = make_llama()
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"matches no module. Available: .*down_proj, gate_proj.*linear modules"):
        bone.apply(model, bone.BoneConfig(r=16, target_modules=["qkv"]))
    assert_unchanged(model, snap)


def test_targets_matching_non_linear_module(make_llama):
    model = make_llama()
    with pytest.raises(ValueError, match=r"matches module\(s\) of a type bone cannot adapt.*self_attn \(LlamaAttention\)"
                                         r".*nn.Linear, transformers Conv1D and bitsandbytes Linear4bit"):
        bone.apply(model, bone.BoneConfig(r=16, target_modules=["self_attn"]))


def test_unknown_architecture_needs_explicit_targets(make_mlp):
    with pytest.raises(ValueError, match=r"no default target_modules for model type None.*all-linear.*fc1"):
        bone.apply(make_mlp(), bone.BoneConfig(r=8))


def test_all_linear_skips_the_output_head(make_llama):
    model = bone.apply(make_llama(), bone.BoneConfig(r=16, target_modules="all-linear"))
    names = [n for n, _ in bone.bone_layers(model)]
    assert len(names) == 14 and "lm_head" not in names


def test_regex_and_exclude(make_llama):
    cfg = bone.BoneConfig(r=16, target_modules=r".*\.(q|v)_proj", exclude_modules=["layers.1.self_attn.v_proj"])
    names = [n for n, _ in bone.bone_layers(bone.apply(make_llama(), cfg))]
    assert names == ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj"]


def test_apply_twice_refused(make_llama):
    model = bone.apply(make_llama(), bone.BoneConfig(r=16))
    with pytest.raises(bone.errors.UsageError, match="already has a Bone adapter"):
        bone.apply(model, bone.BoneConfig(r=16))


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(variant="diag"), "not one of"),
    (dict(r=0), "positive int"),
    (dict(variant="mini"), "needs mini_r"),
    (dict(mini_r=4), "only used by variant='mini'"),
    (dict(dropout=0.1), "dropout applies to shard/mini only"),
    (dict(variant="shard", dropout=1.0), r"in \[0, 1\)"),
    (dict(dtype="float8"), "use one of"),
    (dict(target_modules=3), "list of names"),
    (dict(keep_merged="yes"), "keep_merged must be true, false or 'auto', got 'yes'"),
    (dict(cache_merged=1), "cache_merged must be true, false or 'auto', got 1"),
    (dict(variant="row", keep_merged="auto"), "keep_merged does nothing for variant 'row'"),
])
def test_config_validation(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        bone.BoneConfig(**kwargs)


def test_config_json_round_trip_and_unknown_field():
    cfg = bone.BoneConfig(r=8, variant="mini", mini_r=4, target_modules=["a", "b"], dropout=0.1, dtype=None)
    assert bone.BoneConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match=r"unknown BoneConfig field\(s\) \['rank'\]"):
        bone.BoneConfig.from_dict({"rank": 8})


@pytest.fixture
def saved(make_llama, randomize, tmp_path):
    model = randomize(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="col")))
    return bone.save(model, tmp_path / "adapter")


def _load_fails(make_llama, path, pattern):
    model = make_llama()
    snap = snapshot(model)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        bone.load(model, path)
    assert_unchanged(model, snap)
    assert re.search(pattern, str(err.value)), str(err.value)
    return str(err.value)


def test_truncated_weights(make_llama, saved):
    f = saved / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    _load_fails(make_llama, saved, r"adapter_model.safetensors is corrupt or truncated")


def test_corrupt_config_json(make_llama, saved):
    (saved / "bone_config.json").write_text("{not json")
    _load_fails(make_llama, saved, r"bone_config.json is not valid JSON")


def test_missing_weights_file(make_llama, saved):
    (saved / "adapter_model.safetensors").unlink()
    _load_fails(make_llama, saved, r"adapter_model.safetensors is missing \(the directory holds")


def test_missing_directory(make_llama, tmp_path):
    _load_fails(make_llama, tmp_path / "nope", r"adapter directory .*nope does not exist")


def test_config_disagrees_with_weights(make_llama, saved):
    meta = json.loads((saved / "bone_config.json").read_text())
    meta["config"]["r"] = 8
    (saved / "bone_config.json").write_text(json.dumps(meta))
    msg = _load_fails(make_llama, saved, r"config and weights disagree")
    assert "adapter_model.safetensors" in msg and "(4, 16, 16)" in msg and "(n, 8, 8)" in msg


def test_weights_do_not_fit_base_model(saved, llama_config):
    from transformers import LlamaForCausalLM

    other = LlamaForCausalLM(llama_config(hidden_size=32, intermediate_size=64))
    snap = snapshot(other)
    with pytest.raises(ValueError, match=r"tensor for model\.layers\.\d\.\S+ has shape \(4, 16, 16\), but the model's layer \(out=32, in=\d+\) needs \(2, 16, 16\)"):
        bone.load(other, saved)
    assert_unchanged(other, snap)


def test_unknown_module_in_adapter(make_mlp, saved):
    with pytest.raises(ValueError, match=r"module 'model\.layers\.\d\.\S+' is not a linear layer of this model \(e\.g\. \['fc1', 'fc2'\]\)"):
        bone.load(make_mlp(), saved)


def test_safe_merge_with_nan_changes_nothing(make_llama, randomize):
    model = randomize(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="col")))
    layers = list(bone.bone_layers(model))
    layers[-1][1].bone_block.data[0, 0, 0] = float("nan")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"merging model.layers.1.mlp.down_proj gives non-finite weights"):
        bone.merge(model, safe=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) or (v.isnan() == before[k].isnan()).all()
    assert not any(layer.merged for _, layer in layers)


def test_unmerge_singular_block_changes_nothing(make_llama, randomize):
    model = randomize(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="row")))
    bone.merge(model)
    layer = list(bone.bone_layers(model))[3][1]
    layer.bone_block.data[1] = -torch.eye(16)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"cannot unmerge model.layers.0.self_attn.o_proj: .*singular"):
        bone.unmerge(model)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_disabled_while_merged_and_without_adapters(make_llama):
    model = bone.apply(make_llama(), bone.BoneConfig(r=16, variant="shard"))
    bone.merge(model)
    with pytest.raises(RuntimeError, match="call bone.unmerge"):
        with bone.disabled(model):
            pass
    with pytest.raises(ValueError, match="no Bone adapters"):
        bone.merge(make_llama())


def test_load_overrides_only_non_math_fields(make_llama, saved):
    model = bone.load(make_llama(), saved, fused=False)
    assert bone.adapter_config(model).fused is False
    with pytest.raises(ValueError, match=r"\['r'\] are fixed by the adapter file"):
        bone.load(make_llama(), saved, r=8)


def test_save_with_given_blocks_and_wrong_names(make_llama, randomize, tmp_path):
    model = randomize(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="shard")))
    given = {n: torch.full_like(layer.bone_block, 0.5) for n, layer in bone.bone_layers(model)}
    bone.save(model, tmp_path / "a", blocks=given)
    _, blocks, _ = bone.read_adapter(tmp_path / "a")
    assert all(torch.equal(blocks[n], given[n]) for n in given)
    with pytest.raises(ValueError, match="blocks must name exactly the model's Bone layers"):
        bone.save(model, tmp_path / "b", blocks=dict(list(given.items())[1:]))
    assert not (tmp_path / "b" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("field,value,said", [
    ("r", 32, "r = 32"),
    ("peft_type", "LORA", "peft_type / init_weights = ('LORA', 'bat')"),
    ("init_weights", True, "peft_type / init_weights = ('MISS', True)"),
    ("target_modules", ["model.layers.0.self_attn.q_proj"], "target_modules = '1 module(s)'"),
])
def test_adapter_config_contradicting_bone_config_is_refused(make_llama, saved, field, value, said):
    peft_cfg = json.loads((saved / "adapter_config.json").read_text())
    peft_cfg[field] = value
    (saved / "adapter_config.json").write_text(json.dumps(peft_cfg))
    msg = _load_fails(make_llama, saved, "contradict each other")
    assert said in msg and "bone_config.json and the tensors say" in msg


def test_a_peft_lora_folder_is_refused_with_the_way_to_use_it(make_llama, tmp_path):
    """A LoRA adapter (PEFT's own folder) is no Bone adapter: the message says to merge it and use the result."""
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(make_llama(), peft.LoraConfig(r=4, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "lora")
    msg = _load_fails(make_llama, tmp_path / "lora", r"a PEFT LoRA adapter, not a Bone/MiSS one; load it with PEFT")
    assert f"bone merge --base BASE --adapter {tmp_path / 'lora'} --out MERGED" in msg and "\n" not in msg


def test_non_finite_blocks_are_refused_at_load_naming_the_tensor(make_llama, randomize, tmp_path):
    model = randomize(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="shard")))
    layers = list(bone.bone_layers(model))
    layers[2][1].bone_block.data[0, 3] = float("inf")
    path = bone.save(model, tmp_path / "nan")
    msg = _load_fails(make_llama, path, r"holds NaN or inf")
    assert layers[2][0] in msg and "earlier checkpoint" in msg


def test_apply_twice_with_other_targets_is_refused_and_changes_nothing(make_llama):
    model = bone.apply(make_llama(), bone.BoneConfig(r=16, target_modules=["q_proj"]))
    before = snapshot(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    with pytest.raises(bone.errors.UsageError, match=r"already has a Bone adapter \(variant 'col', r=16\) on 2 layer.*bone.unload"):
        bone.apply(model, bone.BoneConfig(r=8, variant="shard", target_modules=["v_proj"]))
    assert snapshot(model).keys() == before.keys()
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable


def test_load_onto_an_adapted_model_is_refused(make_llama, saved):
    model = bone.apply(make_llama(), bone.BoneConfig(r=16, target_modules=["q_proj"]))
    with pytest.raises(bone.errors.UsageError, match="already has a Bone adapter.*bone.unload"):
        bone.load(model, saved)
    assert len(list(bone.bone_layers(model))) == 2


def test_unmerge_of_16_bit_weights_warns_that_they_are_approximate(make_llama, randomize):
    model = randomize(bone.apply(make_llama(torch.bfloat16), bone.BoneConfig(r=16, variant="col")))
    bone.merge(model)
    with pytest.warns(UserWarning, match=r"unmerged 14 torch.bfloat16 layer\(s\).*approximate.*reload it") as rec:
        bone.unmerge(model)
    assert len(rec) == 1
    fp32 = randomize(bone.apply(make_llama(), bone.BoneConfig(r=16, variant="col")))
    bone.merge(fp32)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bone.unmerge(fp32)
