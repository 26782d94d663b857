"""Read training / evaluation records from local files, the bundled generator, or the Hub.

Every reader returns `list[dict]` (one dict per row). Errors name the file and the line or row
and say how to fix it; nothing is written anywhere.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import ConfigError, DataError, MissingPathError, require
from ..models.hub import looks_like_hub_name, require_hub

FORMATS = (".jsonl", ".json", ".csv", ".parquet")  # local file types load_records reads
BUNDLED = {"arith"}  # names usable as "bundled:<name>"
BUNDLED_SIZES = {"train": 5000, "validation": 500, "test": 1000}  # rows of "bundled:arith" when no limit is given


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


def _check_row(row, where: str, path: Path) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{path}: {where} is a {type(row).__name__}, not an object with named fields "
                        f"(expected e.g. {{\"question\": ..., \"answer\": ...}})")
    if all(_is_empty(v) for v in row.values()):
        raise DataError(f"{path}: {where} is empty: remove it or fill in its fields")
    return row


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start}): re-save it as UTF-8") from None
    except PermissionError:
        raise DataError(f"{path} cannot be read (permission denied): fix its permissions "
                              f"(chmod +r) or copy it somewhere readable") from None


def _read_jsonl(path: Path) -> list[dict]:
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(f"{path} line {i} is blank: JSONL needs one JSON object per line; delete the line")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {i}: malformed JSON ({e.msg} at column {e.colno}); "
                            f"each line must be one complete JSON object") from None
        rows.append(_check_row(row, f"line {i}", path))
    return rows


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno} column {e.colno}: malformed JSON ({e.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records or an object {{\"data\": [...]}}, "
                        f"got a {type(data).__name__}")
    return [_check_row(r, f"record {i}", path) for i, r in enumerate(data)]


def _read_csv(path: Path) -> list[dict]:
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))  # keeps newlines inside quoted fields
    if not reader.fieldnames:
        raise DataError(f"{path} has no header row: the first line must name the columns, e.g. question,answer")
    rows = []
    for row in reader:
        line = reader.line_num
        if None in row:
            raise DataError(f"{path} line {line} has more fields than the header "
                            f"({len(reader.fieldnames)}): quote fields that contain commas")
        if any(v is None for v in row.values()):
            raise DataError(f"{path} line {line} has fewer fields than the header ({len(reader.fieldnames)})")
        rows.append(_check_row(row, f"line {line}", path))
    return rows


def _read_parquet(path: Path) -> list[dict]:
    pq = require("pyarrow.parquet", 'pip install "bone[train]"', "reading .parquet files")

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path} is not a readable Parquet file ({e})") from None
    return [_check_row(r, f"row {i}", path) for i, r in enumerate(table.to_pylist())]


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}


def _load_hub(name: str, split: str) -> list[dict]:
    repo, _, config = name.partition(":")
    require_hub(repo, "dataset", "data=/path/to/train.jsonl (a local .jsonl/.json/.csv/.parquet file)")
    datasets = require("datasets", 'pip install "bone[train]"', "Hub datasets")

    ds = datasets.load_dataset(repo, config or None, split=split)
    return [dict(r) for r in ds]


def load_records(source: str, *, split: str = "train", limit: int | None = None) -> list[dict]:
    """Records (dicts) from `source`, first `limit` of them when given.

    source: a local .jsonl / .json (a list, or {"data": [...]}) / .csv / .parquet file;
    "bundled:arith" (the deterministic arithmetic generator; split "train", "validation" or "test");
    or a Hugging Face Hub dataset "org/name[:config]" (online only; offline fails at once)."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of records, got {limit}")
    source = str(source)
    if source.startswith("bundled:"):
        name = source.split(":", 1)[1]
        if name not in BUNDLED:
            raise DataError(f"unknown bundled dataset {name!r}: available {sorted('bundled:' + b for b in BUNDLED)}")
        if split not in BUNDLED_SIZES:
            raise DataError(f"bundled:{name} has splits {sorted(BUNDLED_SIZES)}, not {split!r}")
        from . import arith

        return arith.generate(limit or BUNDLED_SIZES[split], split=split)
    path = Path(source).expanduser()
    if not path.exists():
        if looks_like_hub_name(source.partition(":")[0]) and path.suffix not in FORMATS:
            rows = _load_hub(source, split)
        else:
            raise MissingPathError(f"data file {source} not found: pass an existing {'/'.join(FORMATS)} "
                                    f"file, 'bundled:arith', or a Hub dataset name 'org/name' (online)")
    elif path.is_dir():
        raise DataError(f"{path} is a folder: pass one data file ({'/'.join(FORMATS)})")
    elif path.suffix.lower() not in _READERS:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(FORMATS)}")
    else:
        rows = _READERS[path.suffix.lower()](path)
    if not rows:
        raise DataError(f"{source} contains no records")
    return rows[:limit] if limit else rows
