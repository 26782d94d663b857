"""The PyTorch RWKV model: recurrent state, loss, padding, Bone targets + checkpointing, generate."""
import pytest
import torch
import torch.nn.functional as F

import bone
from bone.models.rwkv import load_rwkv

from rwkv_testlib import VOCAB


def _ids(B, T, seed=0):
    return torch.randint(1, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model(tiny_pth):
    return load_rwkv(tiny_pth, chunk_size=8).eval()


def test_state_continues_a_sequence(model):
    ids = _ids(2, 30)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        first = model(input_ids=ids[:, :11])
        second = model(input_ids=ids[:, 11:], state=first.state).logits
    torch.testing.assert_close(torch.cat([first.logits, second], 1), full, rtol=1e-5, atol=1e-5)


def test_rows_are_independent_and_right_padding_is_harmless(model):
    ids = _ids(2, 20)
    with torch.no_grad():
        both = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        alone = model(input_ids=ids[1:, :12]).logits
    torch.testing.assert_close(both[1:, :12], alone, rtol=1e-5, atol=1e-5)
    mask = torch.ones_like(ids)
    mask[0, 15:] = 0  # right padding: accepted
    model(input_ids=ids, attention_mask=mask)
    mask[0, :3], mask[0, 3:] = 0, 1  # left padding: refused with a pointer to generate
    with pytest.raises(ValueError, match="right-padded"):
        model(input_ids=ids, attention_mask=mask)


def test_loss_is_shifted_cross_entropy_ignoring_minus_100(model):
    ids = _ids(2, 16)
    labels = ids.clone()
    labels[:, :5] = -100
    out = model(input_ids=ids, labels=labels)
    expect = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expect)
    assert out.logits.shape == (2, 16, VOCAB)


def test_default_bone_targets(model):
    bone.apply(model, bone.BoneConfig(r=16))
    adapted = {name.split(".", 2)[2] for name, _ in bone.bone_layers(model)}
    expect = {"att.receptance", "att.key", "att.value", "att.output", "ffn.key", "ffn.value"}
    if model.config.model_type == "rwkv6":  # every projection RWKV-PEFT builds: x060 also has a gate and ffn.receptance
        expect |= {"att.gate", "ffn.receptance"}
    assert adapted == expect
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(".bone_adapters.default.block") for n in trainable)


def test_gradient_checkpointing_with_bone_gives_the_same_gradients(model):
    bone.apply(model, bone.BoneConfig(r=16))
    torch.manual_seed(0)
    for _, layer in bone.bone_layers(model):
        layer.bone_block.data.normal_(0, 0.02)
    model.train()
    ids = _ids(2, 24)

    def grads():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain = grads()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.is_gradient_checkpointing
    recomputed = grads()
    assert plain.keys() == recomputed.keys() and len(plain) > 0
    assert all(plain[n].abs().sum() > 0 for n in plain)
    for n in plain:
        torch.testing.assert_close(recomputed[n], plain[n], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="use_reentrant"):
        model.gradient_checkpointing_enable({"use_reentrant": True})


def _greedy_reference(model, prompt, n):
    ids = prompt.clone()
    for _ in range(n):
        nxt = model(input_ids=ids[None]).logits[0, -1].argmax()
        ids = torch.cat([ids, nxt[None]])
    return ids[len(prompt):]


def test_generate_is_greedy_and_handles_left_padding(model):
    a, b = _ids(1, 9, seed=1)[0], _ids(1, 5, seed=2)[0]
    batch = torch.stack([a, torch.cat([torch.zeros(4, dtype=a.dtype), b])])
    mask = torch.stack([torch.ones(9), torch.cat([torch.zeros(4), torch.ones(5)])]).long()
    with torch.no_grad():
        out = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
        want_a, want_b = _greedy_reference(model, a, 6), _greedy_reference(model, b, 6)
    assert out.shape == (2, 15)
    assert torch.equal(out[:, :9], batch)
    assert torch.equal(out[0, 9:], want_a) and torch.equal(out[1, 9:], want_b)


def test_generate_stops_at_eos_and_pads(model):
    prompt = _ids(2, 6, seed=3)
    with torch.no_grad():
        free = model.generate(prompt, max_new_tokens=5)
    eos = int(free[0, 7])  # make row 0's second generated token the eos
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=5, eos_token_id=eos, pad_token_id=VOCAB - 1)
    row0 = out[0, 6:].tolist()
    stop = row0.index(eos)
    assert stop <= 1 and all(t == VOCAB - 1 for t in row0[stop + 1:])
    with pytest.raises(ValueError, match="greedy"):
        model.generate(prompt, do_sample=True)
