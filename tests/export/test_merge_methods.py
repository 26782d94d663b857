"""`bone merge` and `bone eval --adapter` take the baselines' results too: the owning method says how
to merge, and the merged model answers like base + adapter."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from bone.cli import main
from bone.train.trainer import Trainer
from tiny import config, make_model_dir

IDS = torch.arange(3, 19).reshape(2, 8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.mark.parametrize("method", ["lora", "pissa", "dora", "full"])
def test_merge_and_eval_accept_baselines(model_dir, tmp_path, capsys, method):
    run = tmp_path / "run"
    trainer = Trainer(config(model_dir, run, method=method, **{"optim.lr": 1e-2 if method != "full" else 1e-3})).setup()
    assert trainer.run() == 0
    with torch.no_grad():
        trained = trainer.acc.unwrap_model(trainer.model).eval()(input_ids=IDS).logits
    assert main(["merge", "--base", str(model_dir), "--adapter", str(run / "adapter"), "--out", str(tmp_path / "merged")]) == 0
    assert "probe check: max |logit difference|" in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=IDS).logits, trained, atol=1e-4)
    outputs = {}
    for name, argv in {"adapter": ["--model", model_dir, "--adapter", run / "adapter"], "merged": ["--model", tmp_path / "merged"]}.items():
        assert main(["eval", *map(str, argv), "--data", "bundled:arith", "--limit", "6", "--max-new-tokens", "8",
                     "--out", str(tmp_path / name)]) == 0
        rows = (tmp_path / name / "predictions.jsonl").read_text().splitlines()
        outputs[name] = [json.loads(r)["output"] for r in rows]
    assert outputs["adapter"] == outputs["merged"]  # greedy decoding: the same generations


def test_merge_of_a_lora_result_without_peft_is_one_line(model_dir, tmp_path, capsys, monkeypatch):
    import sys

    run = tmp_path / "run"
    assert Trainer(config(model_dir, run, method="lora")).setup().run() == 0
    monkeypatch.setitem(sys.modules, "peft", None)
    capsys.readouterr()
    code = main(["merge", "--base", str(model_dir), "--adapter", str(run / "adapter"), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == ['bone merge: error: method lora needs the `peft` package: pip install "bone[compare]"']
    assert not (tmp_path / "m").exists()
