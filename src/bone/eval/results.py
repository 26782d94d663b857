"""Write evaluation results atomically: results.json and predictions.jsonl."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..fs import write_text


def write_results(out_dir, metrics: dict, predictions: list[dict]) -> None:
    """out_dir/results.json (metrics, indented) and out_dir/predictions.jsonl (one JSON per line).
    Both are serialized before anything is written, and each file appears whole or not at all."""
    out = Path(out_dir)
    results = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_text(out / "predictions.jsonl", lines)
        write_text(out / "results.json", results)
    except BaseException:  # e.g. a full disk: leave no empty or half-filled results folder behind
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
