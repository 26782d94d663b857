"""Write evaluation results atomically: results.json and predictions.jsonl."""
from __future__ import annotations

import json
from pathlib import Path

from ..fs import atomic_write


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_results(out_dir, metrics: dict, predictions: list[dict]) -> None:
    """out_dir/results.json (metrics, indented) and out_dir/predictions.jsonl (one JSON per line).
    Both are serialized before anything is written, and each file appears whole or not at all."""
    out = Path(out_dir)
    results = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    out.mkdir(parents=True, exist_ok=True)
    _write_text(out / "predictions.jsonl", lines)
    _write_text(out / "results.json", results)
