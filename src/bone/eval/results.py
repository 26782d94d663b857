"""Write evaluation results atomically: results.json and predictions.jsonl."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_results(out_dir, metrics: dict, predictions: list[dict]) -> None:
    """out_dir/results.json (metrics, indented) and out_dir/predictions.jsonl (one JSON per line).
    Both are serialized before anything is written, and each file appears whole or not at all."""
    out = Path(out_dir)
    results = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "predictions.jsonl", lines)
    _atomic_write(out / "results.json", results)
