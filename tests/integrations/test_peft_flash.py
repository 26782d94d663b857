"""bone.flash on PEFT MiSS: outputs and gradients equal PEFT's own within 1e-5 in fp32, per variant,
with dropout where PEFT has it (the same masks, and the RNG stream left where PEFT leaves it), and
the Flash-Bone kernels really run (no weight-sized tensor kept for backward)."""
from __future__ import annotations

import pytest
import torch

import bone
from bone.bench.measure import SavedLog, param_storages
from miss_helpers import PEFT_INIT, flash_warnings, miss_layers, randomize_miss

peft = pytest.importorskip("peft")

CASES = [("col", 0.0), ("shard", 0.0), ("shard", 0.3), ("mini", 0.0), ("mini", 0.2)]
TOL = dict(rtol=1e-5, atol=1e-5)


def step(model, ids, seed: int = 7, autocast: bool = False):
    """(loss, {trainable name: grad}, the next three RNG draws) of one forward + backward."""
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, torch.rand(3)


def assert_same_step(got, want):
    torch.testing.assert_close(got[0], want[0], **TOL)
    assert got[1].keys() == want[1].keys() and len(want[1]) == 14
    for name in want[1]:
        torch.testing.assert_close(got[1][name], want[1][name], **TOL)
    assert torch.equal(got[2], want[2])  # flash consumed exactly the random numbers PEFT did


@pytest.mark.parametrize("variant,dropout", CASES)
def test_model_loss_gradients_and_rng_equal_peft(variant, dropout, make_peft, node_log):
    model = make_peft(variant, dropout=dropout)
    ids = torch.randint(0, 128, (2, 11), generator=torch.Generator().manual_seed(1))
    want = step(model, ids)
    log = node_log(model)
    assert bone.flash(model) is model
    assert len(bone.integrations.flashed_layers(model)) == 14
    assert_same_step(step(model, ids), want)
    assert log.kernel_calls() == 14 == len(log.nodes)
    bone.unflash(model)
    assert bone.integrations.flashed_layers(model) == []
    again = step(model, ids)
    assert log.kernel_calls() == 14 and len(log.nodes) == 28  # PEFT's path again
    assert torch.equal(again[0], want[0])


def _error(got, truth) -> float:
    return max(((got[1][n] - g).norm() / g.norm()).item() for n, g in truth[1].items())


@pytest.mark.parametrize("variant,dropout", [("col", 0.0), ("shard", 0.0), ("shard", 0.1), ("mini", 0.1)])
def test_autocast_runs_every_layer_as_accurately_as_peft(variant, dropout, make_peft, node_log):
    """bf16 autocast (Trainer bf16=True): equal to PEFT only to bf16 precision, so both are held to
    the fp32 gradients; the dropout masks are PEFT's (x cast to the block dtype, as PEFT does)."""
    model = make_peft(variant, dropout=dropout)
    ids = torch.randint(0, 128, (2, 11), generator=torch.Generator().manual_seed(1))
    truth, theirs = step(model, ids), step(model, ids, autocast=True)
    log = node_log(bone.flash(model))
    ours = step(model, ids, autocast=True)
    assert log.kernel_calls() == 14 == len(log.nodes)
    assert torch.equal(ours[2], theirs[2])
    assert _error(ours, truth) < 1.5 * _error(theirs, truth) + 1e-3
    assert abs(ours[0] - truth[0]) < 1.5 * abs(theirs[0] - truth[0]) + 1e-3


@pytest.mark.parametrize("variant,dropout", CASES)
def test_layer_output_and_input_gradient_with_bias(variant, dropout, make_mlp):
    """One layer with a bias (TinyMLP fc1: 32 -> 48): y, dL/dx and dL/dblock."""
    model = peft.get_peft_model(make_mlp(), peft.MissConfig(r=16, mini_r=8, init_weights=PEFT_INIT[variant],
                                                           miss_dropout=dropout, target_modules=["fc1", "fc2"]))
    randomize_miss(model).train()
    layer = model.base_model.model.fc1
    block = layer.miss_block["default"]
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 32, generator=gen, requires_grad=True)
    gy = torch.randn(3, 5, 48, generator=gen)

    def run():
        torch.manual_seed(3)
        x.grad = block.grad = None
        y = layer(x)
        y.backward(gy)
        return y.detach(), x.grad.clone(), block.grad.clone(), torch.rand(2)

    want = run()
    bone.flash(model)
    got = run()
    for a, b in zip(got[:3], want[:3]):
        torch.testing.assert_close(a, b, **TOL)
    assert torch.equal(got[3], want[3])


def test_ragged_shard_input_slices(make_peft):
    """r=24 does not divide in_features 64 / 128: PEFT zero-pads x, the kernel folds the tail in."""
    model = make_peft("shard", r=24)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    want = step(model, ids)
    bone.flash(model)
    assert len(bone.integrations.flashed_layers(model)) == 14
    assert_same_step(step(model, ids), want)


def _weight_sized_saved(model, ids) -> list[tuple[int, ...]]:
    """Shapes of tensors saved for backward (parameters excluded) as large as an adapted weight."""
    sizes = {m.base_layer.weight.numel() for _, m in miss_layers(model)}
    with SavedLog() as log:
        loss = model(input_ids=ids, labels=ids).loss
    params = param_storages(model)
    del loss
    return [s for s, ptr in log.shapes if ptr not in params and len(s) >= 2 and torch.Size(s).numel() in sizes]


def test_bat_keeps_no_weight_sized_tensor_for_backward(make_peft):
    model = make_peft("col", r=16)
    ids = torch.randint(0, 128, (1, 4))  # fewer tokens than any weight has rows: activations never match a weight's size
    assert len(_weight_sized_saved(model, ids)) >= 14  # PEFT's bat keeps a merged weight per layer
    bone.flash(model)
    assert _weight_sized_saved(model, ids) == []


def test_peft_wraps_no_conv1d_and_flash_takes_only_linear(make_mlp):
    """PEFT 0.21's MiSS refuses transformers Conv1D (GPT-2) targets, so there is no Conv1D MiSS layer
    to flash; a MissLinear built by hand around a Conv1D keeps PEFT's forward, with the warning."""
    from peft.tuners.miss import MissLinear

    with pytest.raises(TypeError, match="not supported"):
        peft.get_peft_model(make_mlp("conv1d"), peft.MissConfig(r=16, target_modules=["fc1"]))
    model = make_mlp("conv1d")
    model.fc1 = MissLinear(model.fc1, "default", peft.MissConfig(r=16), r=16)
    randomize_miss(model)
    x = torch.randn(2, 32)
    want = model(x)
    _, messages = flash_warnings(bone.flash, model)
    assert len(messages) == 1 and "non-Linear base layer: fc1" in messages[0]
    assert bone.integrations.flashed_layers(model) == []
    assert torch.equal(model(x), want)
