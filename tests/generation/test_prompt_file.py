"""Prompt files: one JSON object per line; a bad line is named by its line number."""
import json

import pytest

from bone.errors import DataError, MissingPathError
from bone.generation import Prompt, read_prompt_file


def _write(tmp_path, lines):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prompts_and_conversations_are_read_in_order_with_their_fields(tmp_path):
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}]
    path = _write(tmp_path, [json.dumps({"id": 7, "prompt": "What is 3 + 4?"}), json.dumps({"messages": conv}), ""])
    first, second = read_prompt_file(path)
    assert first.messages == [{"role": "user", "content": "What is 3 + 4?"}]
    assert (first.line, first.record["id"]) == (1, 7)
    assert second.messages == conv and second.line == 2


@pytest.mark.parametrize("bad, match", [
    ('{"prompt": "x"', "malformed JSON"),
    ('["x"]', "not an object"),
    ('{"text": "x"}', 'exactly one of "prompt".*fields found: text'),
    ('{"prompt": "x", "messages": []}', 'exactly one of "prompt"'),
    ('{"prompt": "   "}', "line 3 is empty"),
    ('{"prompt": "", "id": 1}', '"prompt" must be non-empty text'),
    ('{"prompt": 3}', '"prompt" must be non-empty text'),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
     "last message must be the user's"),
    ('{"messages": "hi"}', "messages must be a non-empty list"),
    ("", "blank"),
])
def test_a_bad_line_is_named(tmp_path, bad, match):
    path = _write(tmp_path, ['{"prompt": "fine"}', '{"prompt": "also fine"}', bad, '{"prompt": "after"}'])
    with pytest.raises(DataError, match=match) as err:
        read_prompt_file(path)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and "\n" not in msg


def test_missing_empty_and_folder(tmp_path):
    with pytest.raises(MissingPathError, match="not found"):
        read_prompt_file(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no prompts"):
        read_prompt_file(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="is a folder"):
        read_prompt_file(tmp_path)


def test_a_prompt_from_text():
    assert Prompt.from_text("Hi", system="Be brief.").messages == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    with pytest.raises(DataError, match="empty"):
        Prompt.from_text("  ")
