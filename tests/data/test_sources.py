"""load_records: every file format, the bundled generator, and every bad input with its location."""
from __future__ import annotations

import json
import os

import pytest

from bone.data import DataError, load_records

ROWS = [{"question": "Q one", "answer": "1 + 1 = 2\n#### 2"}, {"question": "Q two", "answer": "#### 3"}]


def _write_all(tmp_path):
    import pandas as pd

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": ROWS}))
    pd.DataFrame(ROWS).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "wrapped.json", "d.csv", "d.parquet"])
def test_every_format_reads_the_same_records(tmp_path, name):
    _write_all(tmp_path)
    assert load_records(str(tmp_path / name)) == ROWS
    assert load_records(str(tmp_path / name), limit=1) == ROWS[:1]


def test_bundled_arith_splits_and_limit():
    train = load_records("bundled:arith", limit=20)
    test = load_records("bundled:arith", split="test", limit=20)
    assert len(train) == len(test) == 20
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    with pytest.raises(DataError, match="splits"):
        load_records("bundled:arith", split="dev")
    with pytest.raises(DataError, match="unknown bundled dataset"):
        load_records("bundled:gsm8k")


def test_missing_file_names_it_and_the_alternatives(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl.*bundled:arith"):
        load_records(str(tmp_path / "nope.jsonl"))


def test_folder_and_unknown_type_are_refused(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        load_records(str(tmp_path))
    (tmp_path / "d.txt").write_text("hello")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        load_records(str(tmp_path / "d.txt"))


def test_unreadable_bytes_are_reported(tmp_path):
    (tmp_path / "bin.jsonl").write_bytes(b'{"a": "\xff\xfe"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        load_records(str(tmp_path / "bin.jsonl"))


def test_malformed_jsonl_line_is_named(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[1]) + "\n" + '{"question": "x", "answer": \n')
    with pytest.raises(DataError, match=r"bad.jsonl line 3: malformed JSON"):
        load_records(str(p))


@pytest.mark.parametrize("line,msg", [("{}", "line 2 is empty"), ('{"question": "", "answer": null}', "line 2 is empty"),
                                      ("", "line 2 is blank"), ("[1, 2]", "line 2 is a list")])
def test_empty_or_non_object_jsonl_rows(tmp_path, line, msg):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(DataError, match=msg):
        load_records(str(p))


def test_trailing_blank_lines_are_fine(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n\n\n")
    assert load_records(str(p)) == ROWS[:1]


def test_malformed_json_file_gives_line_and_column(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n {"question": "a", "answer": "1"},\n {"question": "b" "answer": "2"}\n]')
    with pytest.raises(DataError, match="line 3 column"):
        load_records(str(p))
    p.write_text('"just a string"')
    with pytest.raises(DataError, match="expected a JSON list"):
        load_records(str(p))


@pytest.mark.parametrize("body,msg", [("q,a\n1,2\n3\n", "line 3 has fewer fields"),
                                      ("q,a\n1,2\n3,4,5\n", "line 3 has more fields"),
                                      ("q,a\n1,2\n,\n", "line 3 is empty"),
                                      ("", "no header row")])
def test_csv_problems_name_the_line(tmp_path, body, msg):
    p = tmp_path / "d.csv"
    p.write_text(body)
    with pytest.raises(DataError, match=msg):
        load_records(str(p))


def test_parquet_empty_row_and_corrupt_file(tmp_path):
    import pandas as pd

    pd.DataFrame([ROWS[0], {"question": None, "answer": None}]).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match="row 1 is empty"):
        load_records(str(tmp_path / "d.parquet"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet"):
        load_records(str(tmp_path / "bad.parquet"))


def test_empty_file_has_no_records(tmp_path):
    (tmp_path / "d.jsonl").write_text("")
    with pytest.raises(DataError, match="no records"):
        load_records(str(tmp_path / "d.jsonl"))


def test_hub_name_offline_fails_at_once_naming_the_local_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"'openai/gsm8k'.*offline.*data=/path/to/train.jsonl"):
        load_records("openai/gsm8k:main")


def test_bad_limit():
    with pytest.raises(ValueError, match="positive"):
        load_records("bundled:arith", limit=0)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_says_how_to_fix(tmp_path):
    p = tmp_path / "locked.jsonl"
    p.write_text(json.dumps(ROWS[0]) + "\n")
    p.chmod(0)
    with pytest.raises(DataError, match="locked.jsonl cannot be read.*chmod"):
        load_records(str(p))
