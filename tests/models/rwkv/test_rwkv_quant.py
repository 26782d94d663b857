"""RWKV checkpoints loaded quantized: the default Bone targets become bitsandbytes layers on load (as
RWKV-PEFT's --quant), everything else stays full precision; training runs and the adapter merges."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import bone
from bone.export import merge
from rwkv_testlib import MAKERS

bnb = pytest.importorskip("bitsandbytes")
IDS = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0))


def logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.mark.parametrize("version,method", [("x070", "nf4"), ("x060", "int8")])
def test_quantized_rwkv_trains_and_merges(version, method, tmp_path):
    tiny_pth = tmp_path / f"tiny-{version}.pth"
    torch.save(MAKERS[version](), tiny_pth)
    model = bone.load_model(tiny_pth, quantize=method)
    targets = set(bone.inject.default_target_names(bone.load_model(tiny_pth)))
    cls = bnb.nn.Linear4bit if method == "nf4" else bnb.nn.Linear8bitLt
    quantized = {n for n, m in model.named_modules() if isinstance(m, cls)}
    # att.receptance/key/value/output, ffn.key/value (x060: also att.gate, ffn.receptance) x 2 blocks
    assert quantized == targets and len(targets) == {"x070": 12, "x060": 16}[version]
    assert type(model.head) is nn.Linear and model.emb.weight.dtype == torch.float32

    before = logits(model)
    bone.apply(model, bone.BoneConfig(r=16, variant="shard"))
    opt = torch.optim.AdamW(bone.trainable_parameters(model), lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model.train()(input_ids=IDS, labels=IDS).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    trained = logits(model)
    assert (trained - before).abs().max() > 1e-2
    bone.save(model, tmp_path / "adapter")

    lines = []
    deq = merge(tiny_pth, tmp_path / "adapter", tmp_path / "deq.pth", quantize=method, dequantized=True, log=lines.append)
    assert any(f"probe check: max |logit difference| merged vs {method}-dequantized base+adapter" in ln for ln in lines)
    if method == "nf4":  # bitsandbytes' 4-bit product is exact on the dequantized weight
        torch.testing.assert_close(logits(bone.load_model(deq)), trained, rtol=1e-4, atol=1e-4)
    else:  # its int8 product (eval mode) also rounds the activations to int8
        assert (logits(bone.load_model(deq)) - trained).abs().max() < 0.2 * trained.abs().max()
    full = merge(tiny_pth, tmp_path / "adapter", tmp_path / "full.pth", quantize=method, log=lines.append)
    want = logits(bone.load(bone.load_model(tiny_pth), tmp_path / "adapter"))
    torch.testing.assert_close(logits(bone.load_model(full)), want, rtol=1e-4, atol=1e-4)
    assert sum(f"merged vs {method} base+adapter (as trained" in ln for ln in lines) == 2
    ref, out = torch.load(tiny_pth, weights_only=True), torch.load(deq, weights_only=True)
    assert list(out) == list(ref) and all(out[k].dtype == ref[k].dtype for k in ref)
