"""`bone eval` and the commands together: train, evaluate (base, adapter, merged), merge."""
from __future__ import annotations

import json

import tiny  # noqa: E402


def test_missing_adapter_is_refused_before_any_loading(bone_cli, model_dir, tmp_path):
    code, _, err = bone_cli("eval", "--model", model_dir, "--adapter", tmp_path / "none", "--data", "bundled:arith",
                            "--out", tmp_path / "e")
    assert code == 1 and "adapter" in err and "does not exist" in err and not (tmp_path / "e").exists()


def test_train_eval_merge_end_to_end(bone_cli, model_dir, tmp_path):
    run = tmp_path / "run"
    code, out, _ = bone_cli("train", *tiny.overrides(model_dir, run, **{
        "data.eval": "bundled:arith", "data.eval_limit": 6, "eval.before": True, "eval.after": True,
        "eval.max_new_tokens": 8, "logging.plot": True}))
    assert code == 0
    assert "held-out accuracy before training" in out and "held-out accuracy after training" in out
    assert f"adapter: {run / 'adapter'}" in out and f"loss plot: {run / 'loss.png'}" in out
    assert json.loads((run / "eval" / "after" / "results.json").read_text())["n"] == 6

    merged = tmp_path / "merged"
    code, out, _ = bone_cli("merge", "--base", model_dir, "--adapter", run / "adapter", "--out", merged)
    assert code == 0 and "probe check: max |logit difference|" in out and (merged / "config.json").is_file()

    results = {}
    for name, extra in {"base": [], "adapter": ["--adapter", run / "adapter"], "merged": []}.items():
        model = merged if name == "merged" else model_dir
        code, out, _ = bone_cli("eval", "--model", model, *extra, "--data", "bundled:arith", "--limit", 6,
                                "--max-new-tokens", 8, "--out", tmp_path / f"eval-{name}")
        assert code == 0
        preds = [json.loads(ln) for ln in (tmp_path / f"eval-{name}" / "predictions.jsonl").read_text().splitlines()]
        results[name] = [p["output"] for p in preds]
        assert json.loads((tmp_path / f"eval-{name}" / "results.json").read_text())["n"] == 6
    assert results["adapter"] == results["merged"]  # greedy decoding: identical generations

    code, out, _ = bone_cli("eval", "--model", merged, "--data", "bundled:arith", "--limit", 6,
                            "--metric", "loss", "--out", tmp_path / "eval-loss")
    loss = json.loads((tmp_path / "eval-loss" / "results.json").read_text())
    assert code == 0 and loss["perplexity"] > 1 and loss["tokens"] > 0
    # the trainer's own evaluation and bone eval are one function: same data, same numbers
    code, _, _ = bone_cli("eval", "--model", model_dir, "--adapter", run / "adapter", "--data", "bundled:arith",
                          "--split", "test", "--limit", 6, "--max-new-tokens", 8, "--out", tmp_path / "eval-again")
    assert json.loads((tmp_path / "eval-again" / "results.json").read_text()) == \
        json.loads((run / "eval" / "after" / "results.json").read_text())


def test_bench_dispatches_to_bone_bench(bone_cli):
    code, out, _ = bone_cli("bench", "--help")
    assert code == 0 and out.lower().startswith("usage: bone bench")
