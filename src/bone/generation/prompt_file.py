"""Prompts to generate from: one `--prompt` text, or a JSONL file with one JSON object per line,
{"prompt": "text"} or {"messages": [{"role": "user", "content": "..."}, ...]} (a conversation that
ends with the user's turn). Other fields are kept (`Prompt.record`) so they can be written back
beside the reply. A bad line raises DataError naming the file and the line."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.sources import _read_jsonl
from ..errors import DataError, MissingPathError
from .formats import check_messages


@dataclass
class Prompt:
    messages: list[dict]  # the conversation, ending with the user's turn
    line: int | None = None  # its line in the prompt file (None for a prompt given as text)
    record: dict | None = None  # the line's JSON object as read

    @classmethod
    def from_text(cls, text: str, system: str | None = None) -> "Prompt":
        if not isinstance(text, str) or not text.strip():
            raise DataError("the prompt is empty: give the text to continue")
        head = [{"role": "system", "content": system}] if system else []
        return cls(head + [{"role": "user", "content": text}])


def _prompt(row: dict, where: str, line: int) -> Prompt:
    if ("prompt" in row) == ("messages" in row):
        found = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(f"{where}: give exactly one of \"prompt\" (text) or \"messages\" (a conversation ending "
                        f"with the user's turn); fields found: {found}")
    if "prompt" in row:
        text = row["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: \"prompt\" must be non-empty text, got {text!r:.60}")
        return Prompt([{"role": "user", "content": text}], line, row)
    check_messages(row["messages"], where)
    return Prompt(row["messages"], line, row)


def read_prompt_file(path: str | Path) -> list[Prompt]:
    """The prompts of a JSONL file, in file order; nothing is generated before every line is valid."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingPathError(f"prompt file {path} not found")
    if path.is_dir():
        raise DataError(f"{path} is a folder: pass a .jsonl file with one {{\"prompt\": ...}} object per line")
    rows = _read_jsonl(path)  # blank or malformed lines and non-objects are refused with their line number
    if not rows:
        raise DataError(f"{path} has no prompts: write one {{\"prompt\": \"...\"}} object per line")
    return [_prompt(row, f"{path} line {i}", i) for i, row in enumerate(rows, 1)]
