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
