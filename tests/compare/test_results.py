"""Reading a grid back: the learning rate is picked from validation scores only (here validation and
test disagree), test results of the other rates are never read, and the summary pairs the arms item
by item."""
from __future__ import annotations

import json

import numpy as np

from bone.compare import report, results
from bone.compare.config import run_folder
from bone.compare.plan import make_plan
from tiny import compare_config

ITEMS = [f"question {i}" for i in range(40)]


def write_run(folder, *, validation: float, test: list[int], loss: float) -> None:
    (folder / "eval" / "after").mkdir(parents=True)
    (folder / "eval" / "test").mkdir(parents=True)
    (folder / "adapter").mkdir()
    (folder / "eval" / "after" / "results.json").write_text(json.dumps({"accuracy": validation}))
    (folder / "eval" / "test" / "predictions.jsonl").write_text(
        "".join(json.dumps({"question": q, "correct": bool(c)}) + "\n" for q, c in zip(ITEMS, test)))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": loss + 1 / s}) + "\n" for s in range(1, 11)))
    (folder / "timing.jsonl").write_text(json.dumps({"steps": 10, "seconds": 5.0, "peak_bytes": 2**20, "memory": "cpu-rss",
                                                     "device": "cpu"}) + "\n")


def test_the_rate_is_picked_on_validation_where_test_disagrees(model_dir, tmp_path):
    cfg = compare_config(model_dir, tmp_path / "grid", seeds="[0,1]")
    plan = make_plan(cfg)
    rng = np.random.default_rng(0)
    # col: 1e-3 wins on validation, 3e-3 on test; lora the other way round
    best = {("col", 1e-3): (0.8, 0.3), ("col", 3e-3): (0.3, 0.9), ("lora", 1e-3): (0.2, 0.9), ("lora", 3e-3): (0.7, 0.4)}
    truth = {}
    for (arm, lr), (val, test_p) in best.items():
        for seed in cfg.seeds:
            test = (rng.random(len(ITEMS)) < test_p).astype(int).tolist()
            truth[arm, lr, seed] = test
            write_run(run_folder(cfg, arm, lr, seed), validation=val, test=test, loss=0.5)
    scores = results.validation(plan)
    picked = results.picked(plan, scores)
    assert picked == {"col": 1e-3, "lora": 3e-3}
    for arm, lr in (("col", 3e-3), ("lora", 1e-3)):  # the rates not picked: their test results are never read
        for seed in cfg.seeds:
            (run_folder(cfg, arm, lr, seed) / "eval" / "test" / "predictions.jsonl").write_text("not read\n")
    summary = results.summarize(plan, picked, scores)
    col, lora = summary["arms"]["col"], summary["arms"]["lora"]
    want = [np.mean(truth["col", 1e-3, s]) for s in cfg.seeds]
    assert col["test"]["per_seed"] == want and col["lr"] == 1e-3 and lora["lr"] == 3e-3
    diff = np.mean([np.mean(truth["lora", 3e-3, s]) - np.mean(truth["col", 1e-3, s]) for s in cfg.seeds])
    assert abs(lora["versus_reference"]["diff"] - diff) < 1e-12 and col["versus_reference"] is None
    assert col["validation"] == {"0.001": {"mean": 0.8, "std": 0.0, "min": 0.8, "max": 0.8, "n": 2},
                                 "0.003": {"mean": 0.3, "std": 0.0, "min": 0.3, "max": 0.3, "n": 2}}
    assert col["seconds_per_step"] == 0.5 and col["peak_memory_bytes"] == 2**20 and col["trainable"] == 8192
    assert summary["test_items"] == len(ITEMS) and summary["ranking"] == sorted(["col", "lora"], key=lambda a: -summary["arms"][a]["test"]["mean"])
    line = report.closing_line(summary)
    assert line.startswith("ranking (test accuracy at each arm's validation-picked lr): ")
    assert ("lora " + f"{lora['versus_reference']['diff']:+.3f}") in line
    assert "| **0.800** | 0.300 |" in report.markdown(plan, summary, "bone compare x.yaml")
    # col picked the lower and lora the higher of its two rates: both at an end of their list
    assert col["lr_at_edge"] == "lowest" and lora["lr_at_edge"] == "highest"
    note = report.edge_note(summary)
    assert note.startswith("col picked the lowest learning rate of its list; lora picked the highest learning rate of its list")
    assert note in report.markdown(plan, summary, "bone compare x.yaml")


def test_closing_line_ranks_equal_accuracies_as_a_tie():
    arm = lambda mean, v: {"test": {"mean": mean}, "versus_reference": v}  # noqa: E731
    v = {"diff": 0.0, "low": -0.1, "high": 0.1, "significant": False}
    summary = {"reference": "col", "confidence": 0.95, "ranking": ["col", "lora", "pissa"],
               "arms": {"col": arm(0.5, None), "lora": arm(0.5, v), "pissa": arm(0.25, v)}}
    assert report.closing_line(summary).startswith(
        "ranking (test accuracy at each arm's validation-picked lr): col 0.500 = lora 0.500 > pissa 0.250; vs col")
