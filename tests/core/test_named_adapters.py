"""Several named adapters on one model (bone.adapters): adding, switching, the base, merge / unmerge /
unload / delete / save of one name, training only the active one, PEFT reading a saved named
adapter, and one-line refusals that change nothing."""
from __future__ import annotations

import pytest
import torch

import bone
from bone.errors import AdapterError, ConfigError, UsageError

A = bone.BoneConfig(r=16, variant="col")  # all seven projections
B = bone.BoneConfig(r=8, variant="shard", target_modules=["q_proj", "v_proj", "down_proj"])
IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(3))


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def blocks(model, name):
    return {n: layer.bone_adapters[name].block.detach().clone() for n, layer in bone.bone_layers(model)
            if name in layer.bone_adapters}


def set_blocks(model, name, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in bone.bone_layers(model):
            if name in layer.bone_adapters:
                block = layer.bone_adapters[name].block
                block.copy_(torch.randn(block.shape, generator=g) * 0.05)
    return model


@pytest.fixture
def two(make_llama):
    """(model with "a" (col r=16, every projection) and "b" (shard r=8, three projections), base logits,
    logits of a model holding only "a", only "b")."""
    only_a = set_blocks(bone.apply(make_llama(), A), "default", 1)
    only_b = set_blocks(bone.apply(make_llama(), B), "default", 2)
    model = make_llama()
    base = logits(model)
    set_blocks(bone.apply(model, A, name="a"), "a", 1)
    set_blocks(bone.apply(model, B, name="b"), "b", 2)
    return model, base, logits(only_a), logits(only_b)


def test_two_adapters_of_different_variants_and_ranks_switch_exactly(two):
    model, base, want_a, want_b = two
    assert bone.adapter_names(model) == ["a", "b"] and bone.active_adapter(model) == "b"  # the one added last
    assert not torch.equal(want_a, want_b) and not torch.equal(want_a, base)
    assert torch.equal(logits(model), want_b)
    assert torch.equal(logits(bone.use(model, "a")), want_a)
    assert torch.equal(logits(bone.use(model, "b")), want_b)
    assert torch.equal(logits(bone.use(model, None)), base)
    layers = dict(bone.bone_layers(model))
    assert set(layers["model.layers.0.self_attn.q_proj"].bone_adapters) == {"a", "b"}
    assert set(layers["model.layers.0.self_attn.k_proj"].bone_adapters) == {"a"}


def test_disabled_gives_the_base_and_using_comes_back(two):
    model, base, want_a, want_b = two
    bone.use(model, "a")
    with bone.disabled(model):
        assert torch.equal(logits(model), base)
    with bone.using(model, "b"):
        assert torch.equal(logits(model), want_b)
    assert torch.equal(logits(model), want_a) and bone.active_adapter(model) == "a"
    with pytest.raises(RuntimeError, match="inside"), bone.using(model, "b"):
        raise RuntimeError("inside")
    assert bone.active_adapter(model) == "a"


def test_merge_unmerge_and_unload_of_one_name_leave_the_other_intact(two):
    model, base, want_a, want_b = two
    kept = blocks(model, "b")
    bone.merge(model, name="a")  # "b" is active: merging "a" makes it the active one
    assert bone.active_adapter(model) == "a"
    torch.testing.assert_close(logits(model), want_a, rtol=1e-5, atol=1e-5)
    bone.unmerge(model, name="a")
    assert all(torch.equal(t, kept[n]) for n, t in blocks(model, "b").items())
    torch.testing.assert_close(logits(bone.use(model, "b")), want_b, rtol=1e-5, atol=1e-5)
    bone.merge(bone.use(model, "a"))
    bone.unload(model, "a")  # "a" stays folded in for good; "b" is still there
    assert bone.adapter_names(model) == ["b"] and bone.active_adapter(model) is None
    torch.testing.assert_close(logits(model), want_a, rtol=1e-5, atol=1e-5)
    assert set(n for n, _ in bone.bone_layers(model)) == set(kept)  # layers left without adapters are plain again
    assert all(torch.equal(t, kept[n]) for n, t in blocks(model, "b").items())


def test_delete_adapter(two):
    model, base, want_a, want_b = two
    bone.delete_adapter(model, "b")  # the active one: no adapter is active afterwards
    assert bone.adapter_names(model) == ["a"] and bone.active_adapter(model) is None
    assert torch.equal(logits(model), base)
    assert torch.equal(logits(bone.use(model, "a")), want_a)
    bone.delete_adapter(model, "a")
    assert list(bone.bone_layers(model)) == [] and torch.equal(logits(model), base)


def test_save_of_a_name_round_trips(two, make_llama, tmp_path):
    model, base, want_a, want_b = two
    bone.save(model, tmp_path / "b", name="b")  # not the active one after this:
    bone.use(model, "a")
    bone.save(model, tmp_path / "a")  # default: the active one
    assert torch.equal(logits(bone.load(make_llama(), tmp_path / "b")), want_b)
    assert torch.equal(logits(bone.load(make_llama(), tmp_path / "a")), want_a)
    again = bone.load(bone.load(make_llama(), tmp_path / "a", name="x"), tmp_path / "b", name="y")
    assert bone.adapter_names(again) == ["x", "y"] and bone.adapter_config(again, "x").variant == "col"
    assert torch.equal(logits(again), want_b) and torch.equal(logits(bone.use(again, "x")), want_a)
    saved = bone.adapter_state_dict(again, "y")
    assert sorted(saved) == sorted(blocks(model, "b")) and all(torch.equal(saved[n], t) for n, t in blocks(model, "b").items())


def _step(model):
    params = bone.trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(2):
        model(input_ids=IDS, labels=IDS).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return params


def test_optimizer_steps_move_only_the_active_adapter(two):
    model, *_ = two
    bone.use(model, "a")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".bone_adapters.a.block" in n for n in trainable)
    assert len(trainable) == 14 and len(bone.trainable_parameters(model)) == 14
    a0, b0 = blocks(model, "a"), blocks(model, "b")
    _step(model)
    assert all(not torch.equal(t, a0[n]) for n, t in blocks(model, "a").items())
    assert all(torch.equal(t, b0[n]) for n, t in blocks(model, "b").items())
    bone.use(model, "b")  # requires_grad moves with the switch
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n, _ in model.named_parameters() if ".bone_adapters.b.block" in n]
    a1 = blocks(model, "a")
    assert len(_step(model)) == 6
    assert all(not torch.equal(t, b0[n]) for n, t in blocks(model, "b").items())
    assert all(torch.equal(t, a1[n]) for n, t in blocks(model, "a").items())


def test_peft_reads_a_saved_named_adapter(two, make_llama, tmp_path):
    peft = pytest.importorskip("peft")
    model, base, want_a, want_b = two
    for name, want in (("a", want_a), ("b", want_b)):
        bone.save(model, tmp_path / name, name=name)
        peft_model = peft.PeftModel.from_pretrained(make_llama(), tmp_path / name, adapter_name=name).eval()
        torch.testing.assert_close(logits(peft_model), want, rtol=1e-5, atol=1e-5)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, bone.adapter_names(model), bone.active_adapter(model)


def _same(before, model):
    state, names, active = before
    now = model.state_dict()
    assert names == bone.adapter_names(model) and active == bone.active_adapter(model)
    assert now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


@pytest.mark.parametrize("call,pattern", [
    (lambda m: bone.use(m, "c"), r"^no adapter named 'c'; the model has: 'a', 'b'$"),
    (lambda m: bone.merge(m, name="c"), r"^no adapter named 'c'; the model has: 'a', 'b'$"),
    (lambda m: bone.unload(m, "c"), r"^no adapter named 'c'; the model has: 'a', 'b'$"),
    (lambda m: bone.delete_adapter(m, "c"), r"^no adapter named 'c'; the model has: 'a', 'b'$"),
    (lambda m: bone.save(m, "never-written", name="c"), r"^no adapter named 'c'"),
    (lambda m: bone.apply(m, A, name="a"), r"^the model already has an adapter named 'a': .*bone.delete_adapter"),
    (lambda m: bone.apply(m, A), r"^the model already has Bone adapters 'a', 'b' on 14 layer.*name=.*bone.unload"),
    (lambda m: bone.apply(m, A, name="x.y"), r"adapter name 'x.y' is not usable.*no dots"),
    (lambda m: bone.apply(m, A, name="eval"), r"adapter name 'eval' is taken by torch's module API"),
    (lambda m: bone.apply(m, bone.BoneConfig(r=7, variant="col"), name="c"), r"cannot adapt 14 layer"),
])
def test_bad_names_and_calls_are_one_line_and_change_nothing(two, call, pattern):
    model = two[0]
    before = snapshot(model)
    with pytest.raises((AdapterError, UsageError, ConfigError, bone.errors.ModelError), match=pattern) as info:
        call(model)
    assert "\n" not in str(info.value)
    _same(before, model)


def test_load_with_a_taken_name_is_refused(two, tmp_path):
    model = two[0]
    bone.save(model, tmp_path / "a", name="a")
    before = snapshot(model)
    with pytest.raises(UsageError, match="already has an adapter named 'b'"):
        bone.load(model, tmp_path / "a", name="b")
    with pytest.raises(UsageError, match="already has Bone adapters 'a', 'b'.*give it a name"):
        bone.load(model, tmp_path / "a")
    _same(before, model)


def test_while_merged_switching_adding_and_deleting_are_refused(two, tmp_path):
    model = two[0]
    bone.merge(bone.use(model, "a"))
    before = snapshot(model)
    for call, pattern in [
        (lambda: bone.use(model, "b"), "adapter 'a' is merged into the weights: call bone.unmerge"),
        (lambda: bone.use(model, None), "before switching to the base model"),
        (lambda: bone.merge(model, name="b"), "adapter 'a' is merged already"),
        (lambda: bone.unmerge(model, name="b"), r"adapter 'b' is not merged \('a' is\)"),
        (lambda: bone.delete_adapter(model, "a"), "adapter 'a' is merged.*bone.unload\\(model, 'a'\\)"),
        (lambda: bone.apply(model, B, name="c"), "adapter 'a' is merged into the weights.*before adding 'c'"),
    ]:
        with pytest.raises(UsageError, match=pattern):
            call()
        _same(before, model)
    bone.use(model, "a")  # the merged one: allowed, nothing to do
    _same(before, model)


def test_single_adapter_api_is_the_adapter_default(make_llama, tmp_path):
    model = set_blocks(bone.apply(make_llama(), A), "default", 1)
    assert bone.adapter_names(model) == ["default"] and bone.active_adapter(model) == "default"
    bone.save(model, tmp_path)
    assert bone.adapter_config(model).variant == "col"
    assert len(bone.trainable_parameters(model)) == 14
    with pytest.raises(UsageError, match=r"already has a Bone adapter \(variant 'col', r=16\)"):
        bone.load(model, tmp_path)
    bone.load(model, tmp_path, name="again")  # next to it, under a name
    assert bone.adapter_names(model) == ["default", "again"]
    assert torch.equal(logits(model), logits(bone.use(model, "default")))
