"""to_examples field mapping, and the alpaca / chat prompt templates."""
from __future__ import annotations

import pytest

from bone.data import DataError, Example, render_prompt, to_examples
from bone.data.templates import ALPACA_PROMPT, render_response


@pytest.mark.parametrize("row,prompt,response", [
    ({"query": "q", "response": "r", "type": "GSM_Rephrased"}, "q", "r"),  # MetaMathQA
    ({"question": "q", "answer": "r"}, "q", "r"),  # GSM8K
    ({"instruction": "q", "input": "", "output": "r"}, "q", "r"),  # Alpaca without input
    ({"instruction": "q", "input": "ctx", "output": "r"}, "q\n\nctx", "r"),  # Alpaca with input
])
def test_field_layouts_are_detected(row, prompt, response):
    assert to_examples([row]) == [Example(prompt, response)]


def test_messages_and_explicit_fields():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert to_examples([{"messages": msgs}]) == [Example(None, None, msgs)]
    rows = [{"question": "a", "answer": "b", "problem": "P", "solution": "S"}]
    assert to_examples(rows, prompt_field="problem", response_field="solution") == [Example("P", "S")]
    assert to_examples(rows, response_field="solution") == [Example("a", "S")]  # prompt auto-detected
    assert to_examples([{"conv": msgs}], messages_field="conv")[0].messages == msgs


def test_missing_and_empty_fields_name_the_record():
    rows = [{"question": "a", "answer": "b"}, {"question": "c"}, {"question": " ", "answer": "d"}]
    with pytest.raises(DataError, match=r"record 1: field 'answer' is missing.*fields present: question"):
        to_examples(rows)
    with pytest.raises(DataError, match=r"record 1: field 'question' is missing or empty"):
        to_examples([rows[0], rows[2]])
    with pytest.raises(DataError, match="cannot tell the prompt and response fields"):
        to_examples([{"foo": 1, "bar": 2}])
    with pytest.raises(DataError, match="record 0: field 'nope'"):
        to_examples(rows[:1], prompt_field="nope", response_field="answer")


def test_bad_messages():
    with pytest.raises(DataError, match="last message must be the assistant"):
        to_examples([{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match="message 0 needs string"):
        to_examples([{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}])
    with pytest.raises(DataError, match="non-empty list"):
        to_examples([{"messages": []}])


def test_alpaca_prompt_is_the_seed_prompt(tokenizer):
    ex = Example("What is 2 + 2?", "2 + 2 = 4\n#### 4")
    prompt = render_prompt(ex, tokenizer, "alpaca")
    assert prompt == ("Below is an instruction that describes a task. Write a response that appropriately "
                      "completes the request.\n\n### Instruction:\nWhat is 2 + 2?\n\n### Response:")
    assert render_response(ex, tokenizer, "alpaca") == (" 2 + 2 = 4\n#### 4", True)
    chat = Example(None, None, [{"role": "user", "content": "What is 2 + 2?"},
                                {"role": "assistant", "content": "4"}])
    assert render_prompt(chat, tokenizer, "alpaca") == ALPACA_PROMPT.format(query="What is 2 + 2?")


def test_chat_template_splits_prompt_and_reply(tokenizer):
    ex = Example("What is 2 + 2?", "#### 4")
    prompt = render_prompt(ex, tokenizer, "chat")
    assert prompt == "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    assert render_response(ex, tokenizer, "chat") == ("#### 4<|im_end|>", False)  # template closes the turn


def test_unknown_template_and_multiturn_alpaca(tokenizer):
    with pytest.raises(ValueError, match="unknown template 'vicuna': choose one of alpaca, chat"):
        render_prompt(Example("a", "b"), tokenizer, "vicuna")
    turns = [{"role": r, "content": "x"} for r in ("user", "assistant", "user", "assistant")]
    with pytest.raises(DataError, match="use template='chat'"):
        render_prompt(Example(None, None, turns), tokenizer, "alpaca")


def test_chat_needs_a_chat_template(tokenizer):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    with pytest.raises(ValueError, match="has none"):
        render_prompt(Example("a", "b"), plain, "chat")


def test_records_must_be_dicts():
    with pytest.raises(DataError, match="record 0 is a str"):
        to_examples(["just text"])
    with pytest.raises(DataError, match="record 1 is a list"):
        to_examples([{"question": "a", "answer": "b"}, ["a", "b"]])
    with pytest.raises(DataError, match="no records"):
        to_examples([])
