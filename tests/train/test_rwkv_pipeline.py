"""RWKV `.pth` checkpoints through the same pipeline: bone train (gradient checkpointing on), bone merge
to a `.pth` with the probe check, bone eval on the merged file."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import bone
from bone.cli import main
from bone.models.rwkv import load_rwkv
from tiny import build_tokenizer, overrides

sys.path.insert(0, str(Path(__file__).parents[1] / "models" / "rwkv"))
from rwkv_testlib import MAKERS  # noqa: E402  (tiny BlinkDL-layout checkpoints, vocab 512)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    build_tokenizer(500).save_pretrained(path)  # < 512 ids: fits the tiny checkpoints' 512 rows
    return path


@pytest.mark.parametrize("version", ["x060", "x070"])
def test_train_merge_eval_rwkv(version, tokenizer_dir, tmp_path, capsys):
    pth = tmp_path / f"tiny-{version}.pth"
    torch.save(MAKERS[version](), pth)
    run = tmp_path / "run"
    args = overrides(pth, run, **{"model.tokenizer": tokenizer_dir, "bone.r": 16, "bone.target_modules": "null",
                                  "schedule.max_steps": 3, "model.gradient_checkpointing": True})
    assert main(["train", *map(str, args)]) == 0
    out = capsys.readouterr().out
    n_blocks = len(bone.read_adapter(run / "adapter")[1])
    assert f"Bone-col r=16: {n_blocks} trainable tensors" in out and n_blocks >= 12  # the RWKV default targets, 2 layers
    merged = tmp_path / "merged.pth"
    assert main(["merge", "--base", str(pth), "--adapter", str(run / "adapter"), "--out", str(merged)]) == 0
    out = capsys.readouterr().out
    assert "probe check: max |logit difference|" in out and merged.is_file()
    base, new = torch.load(pth, weights_only=True), torch.load(merged, weights_only=True)
    assert list(base) == list(new) and all(base[k].dtype == new[k].dtype for k in base)
    assert sum(not torch.equal(base[k], new[k]) for k in base) == n_blocks
    assert main(["eval", "--model", str(merged), "--tokenizer", str(tokenizer_dir), "--data", "bundled:arith",
                 "--limit", "4", "--metric", "loss", "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["tokens"] > 0


PARTS = {"x060": "[time, ln]", "x070": "[ln, x_]"}  # RWKV-PEFT's default on x060; x070 has no time_*: its x_ mixes
TOKENS = torch.randint(0, 500, (24,), generator=torch.Generator().manual_seed(7)).tolist()


@pytest.fixture(scope="module", params=["x060", "x070"])
def trained_with_parts(request, tokenizer_dir, tmp_path_factory):
    """(version, base .pth, run folder, merged .pth, adapter-model logits) of a bone train run with trained parts."""
    version, tmp = request.param, tmp_path_factory.mktemp(f"parts-{request.param}")
    pth = tmp / f"tiny-{version}.pth"
    torch.save(MAKERS[version](), pth)
    args = overrides(pth, tmp / "run", **{"model.tokenizer": tokenizer_dir, "bone.r": 48, "bone.variant": "shard",
                                          "bone.target_modules": "null", "bone.train_parts": PARTS[version],
                                          "optim.parts_lr": 5e-4, "schedule.max_steps": 3})
    assert main(["train", *map(str, args)]) == 0
    model = bone.load(load_rwkv(pth), tmp / "run" / "adapter").eval()
    with torch.no_grad():
        want = model(input_ids=torch.tensor([TOKENS])).logits[0]
    assert main(["merge", "--base", str(pth), "--adapter", str(tmp / "run" / "adapter"), "--out", str(tmp / "merged.pth")]) == 0
    return version, pth, tmp / "run", tmp / "merged.pth", want


def test_trained_parts_are_saved_loaded_and_merged(trained_with_parts):
    version, pth, run, merged, want = trained_with_parts
    adapter, base = bone.read(run / "adapter"), torch.load(pth, weights_only=True)
    patterns = PARTS[version].strip("[]").split(", ")
    assert set(adapter.parts) == {k for k in base if any(p in k for p in patterns)}
    assert all(not torch.equal(adapter.parts[k], base[k]) for k in adapter.parts)  # every part trained
    new = torch.load(merged, weights_only=True)
    assert list(new) == list(base) and all(torch.equal(new[k], adapter.parts[k]) for k in adapter.parts)
    with torch.no_grad():
        got = load_rwkv(merged)(input_ids=torch.tensor([TOKENS])).logits[0]
    assert (got - want).abs().max() <= 1e-4


@pytest.mark.integration
def test_official_runtime_runs_the_merged_parts(trained_with_parts):
    from rwkv_testlib import official_logits

    version, _, _, merged, want = trained_with_parts
    assert (official_logits(merged, TOKENS, version) - want).abs().max() <= 1e-4


def test_eval_reads_an_rwkv_peft_checkpoint(tokenizer_dir, tmp_path, capsys):
    """`bone eval --adapter rwkv-0.pth` (RWKV-PEFT's file) scores what `bone eval` of the merged model scores."""
    pth = tmp_path / "base.pth"
    torch.save(MAKERS["x060"](), pth)
    g = torch.Generator().manual_seed(0)
    model = load_rwkv(pth)
    peft = {f"{n}.disha": 0.05 * torch.randn(16, model.get_submodule(n).out_features, generator=g)
            for n in bone.inject.default_target_names(model)}
    peft["blocks.1.ln2.weight"] = model.blocks[1].ln2.weight.detach() + 0.1
    torch.save(peft, tmp_path / "rwkv-0.pth")
    common = ["--tokenizer", str(tokenizer_dir), "--data", "bundled:arith", "--limit", "4", "--metric", "loss"]
    assert main(["eval", "--model", str(pth), "--adapter", str(tmp_path / "rwkv-0.pth"), *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["merge", "--base", str(pth), "--adapter", str(tmp_path / "rwkv-0.pth"), "--out", str(tmp_path / "m.pth")]) == 0
    assert main(["eval", "--model", str(tmp_path / "m.pth"), *common, "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / d / "results.json").read_text()) for d in "ab")
    base_dir = tmp_path / "c"
    assert main(["eval", "--model", str(pth), *common, "--out", str(base_dir)]) == 0
    c = json.loads((base_dir / "results.json").read_text())
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and abs(a["loss"] - c["loss"]) > 1e-3
