"""Prompt formats render conversations exactly as training tokenized its prompts."""
import copy

import pytest

from bone.data.templates import Example
from bone.data.tokenize import IGNORE, tokenize_examples
from bone.errors import ConfigError, DataError, ModelError
from bone.generation import AlpacaFormat, ChatTemplateFormat, prompt_format, trained_template

U1, A1, U2 = "What is 3 + 4?", "3 + 4 = 7. The answer is 7.", "And 7 + 5?"


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text):
    return {"role": "assistant", "content": text}


def _training_prompt(tokenizer, example, template):
    row = tokenize_examples([example], tokenizer, template=template, max_length=4096)[0]
    return [t for t, lab in zip(row["input_ids"].tolist(), row["labels"].tolist()) if lab == IGNORE]


def test_alpaca_prompt_is_the_training_prompt(tokenizer):
    fmt = prompt_format(tokenizer, "alpaca")
    assert isinstance(fmt, AlpacaFormat) and fmt.note is None
    assert fmt.prompt_ids([_user(U1)]) == _training_prompt(tokenizer, Example(U1, A1), "alpaca")


def test_alpaca_history_is_packed_training_rows(tokenizer):
    """Earlier turns read like examples packed one after another in training (each ends with eos)."""
    fmt = prompt_format(tokenizer, "alpaca")
    packed = tokenize_examples([Example(U1, A1)], tokenizer, template="alpaca", max_length=4096, packing=True)
    first = packed[0]["input_ids"].tolist()
    assert first[-1] == tokenizer.eos_token_id
    history = [_user(U1), _assistant(A1), _user(U2)]
    assert fmt.prompt_ids(history) == first + fmt.prompt_ids([_user(U2)])
    with_system = [{"role": "system", "content": "Be brief."}] + history
    assert fmt.prompt_ids(with_system) == fmt.prompt_ids(history)  # alpaca has no system message, as in training


def test_chat_prompt_is_the_training_prompt(tokenizer):
    fmt = prompt_format(tokenizer, "chat")
    assert isinstance(fmt, ChatTemplateFormat) and fmt.note is None
    history = [{"role": "system", "content": "Be brief."}, _user(U1), _assistant(A1), _user(U2)]
    example = Example(None, None, history + [_assistant("7 + 5 = 12.")])
    assert fmt.prompt_ids(history) == _training_prompt(tokenizer, example, "chat")


def test_no_chat_template_falls_back_to_alpaca_with_a_note(plain_tokenizer):
    fmt = prompt_format(plain_tokenizer, "chat")
    assert isinstance(fmt, AlpacaFormat) and "no chat template" in fmt.note and "alpaca" in fmt.note
    assert fmt.prompt_ids([_user(U1)]) == prompt_format(plain_tokenizer, "alpaca").prompt_ids([_user(U1)])
    with pytest.raises(ConfigError, match="unknown template"):
        prompt_format(plain_tokenizer, "vicuna")


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_next_turn_continues_a_history_kept_as_tokens(tokenizer, template):
    """prompt([u1]) + reply tokens + next_turn == prompt([u1, a1, u2]) when the reply's tokens are
    its own encoding; a recurrent model's chat feeds only next_turn on top of its state."""
    fmt = prompt_format(tokenizer, template)
    reply = " " + A1 if template == "alpaca" else A1  # alpaca replies follow "### Response:" after a space
    kept = fmt.prompt_ids([_user(U1)]) + tokenizer.encode(reply, add_special_tokens=False)
    assert kept + fmt.next_turn_ids([_user(U1), _assistant(A1)], U2) == fmt.prompt_ids([_user(U1), _assistant(A1), _user(U2)])


def test_a_template_that_rewrites_replies_cannot_continue_a_state(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] != 'assistant' %}<|im_start|>{{ m['role'] }}\n"
                         "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(ModelError, match="rewrites earlier replies"):
        prompt_format(tok, "chat").next_turn_ids([_user(U1), _assistant(A1)], U2)


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty list"),
    ([_assistant(A1)], "message 0 has role 'assistant'"),
    ([_user(U1), _assistant(A1)], "last message must be the user's"),
    ([_user(U1), _user(U2)], "message 1 has role 'user'"),
    ([{"role": "user"}], "message 0 needs string 'role' and 'content'"),
    ([{"role": "system", "content": "s"}], "last message must be the user's"),
])
def test_bad_conversations_are_refused(tokenizer, messages, match):
    for template in ("alpaca", "chat"):
        with pytest.raises(DataError, match=match):
            prompt_format(tokenizer, template).prompt_ids(messages)


def test_trained_template_is_read_from_the_run_folder(tmp_path):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "checkpoints" / "step-000040" / "adapter").mkdir(parents=True)
    assert trained_template(run / "adapter") is None
    (run / "config.yaml").write_text("output_dir: run\ndata:\n  train: bundled:arith\n  template: chat  # (str) ...\n")
    assert trained_template(run / "adapter") == "chat"
    assert trained_template(run / "checkpoints" / "step-000040" / "adapter") == "chat"
