"""Examples (prompt + response, or chat messages), field auto-detection, and prompt templates.

Templates:
  alpaca: the seed's Alpaca-style prompt (MetaMathQA / PiSSA / Bone scripts); the response follows
          "### Response:" after one space, and the tokenizer's eos ends it.
  chat:   the tokenizer's own chat template (`apply_chat_template`); the last assistant message is
          the response, everything before it (with the generation prompt) is the prompt.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError, DataError

TEMPLATES = ("alpaca", "chat")  # names accepted by render_prompt / tokenize_examples

ALPACA_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n### Instruction:\n{query}\n\n### Response:"
)

# (prompt field, response field) pairs tried in order when no field is given
FIELD_PAIRS = (("query", "response"), ("question", "answer"), ("instruction", "output"),
               ("prompt", "completion"), ("prompt", "response"))


@dataclass
class Example:
    """One training / evaluation example: either prompt+response text or a chat."""

    prompt: str | None  # the user's request (alpaca: the instruction, with its input appended)
    response: str | None  # the target text (None for prompt-only evaluation rows)
    messages: list[dict] | None = None  # chat: [{"role": "system"|"user"|"assistant", "content": str}]


def _text(row: dict, field: str, i: int, *, required: bool = True) -> str | None:
    v = row.get(field)
    if v is None or (isinstance(v, str) and not v.strip()):
        if not required:
            return None
        have = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(f"record {i}: field {field!r} is missing or empty (fields present: {have}); "
                        f"fix the record or name the fields: {NAMING}")
    if not isinstance(v, (str, int, float)):
        raise DataError(f"record {i}: field {field!r} should be text, got a {type(v).__name__}")
    return str(v)


def _messages(row: dict, field: str, i: int) -> list[dict]:
    msgs = row.get(field)
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"record {i}: field {field!r} must be a non-empty list of "
                        f"{{\"role\": ..., \"content\": ...}} messages")
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"record {i}: message {j} needs string 'role' and 'content' fields")
    if msgs[-1]["role"] != "assistant":
        raise DataError(f"record {i}: the last message must be the assistant's reply (the training target)")
    return msgs


# where a user names the records' fields (one line in every field error)
NAMING = ("bone train data.prompt_field= / data.response_field= (held-out data: data.eval_prompt_field= / "
          "data.eval_response_field=), bone eval --prompt-field / --response-field")


def _detect(row: dict) -> tuple[str | None, str | None, str | None]:
    if not isinstance(row, dict):
        raise DataError(f"record 0 is a {type(row).__name__}, not a dict of fields")
    if "messages" in row:
        return None, None, "messages"
    for p, r in FIELD_PAIRS:
        if p in row and r in row:
            return p, r, None
    raise DataError(f"record 0: cannot tell the prompt and response fields from {sorted(map(str, row))}; "
                    f"known layouts: {', '.join(f'{p}/{r}' for p, r in FIELD_PAIRS)}, messages; "
                    f"or name them: {NAMING}")


def to_examples(records, *, prompt_field: str | None = None, response_field: str | None = None,
                messages_field: str | None = None, source: str | None = None) -> list[Example]:
    """Map raw records to Examples. Fields are auto-detected from the first record (MetaMathQA
    query/response, GSM8K question/answer, Alpaca instruction(+input)/output, chat messages) unless
    given; a missing or empty field raises DataError naming the record index (0-based), after
    `source` (which data it is, e.g. "data.eval /data/gsm8k.jsonl") when given."""
    try:
        return _examples(list(records), prompt_field, response_field, messages_field)
    except DataError as err:
        if source is None:
            raise
        raise DataError(f"{source}: {err}") from None


def _examples(records: list, prompt_field: str | None, response_field: str | None,
              messages_field: str | None) -> list[Example]:
    if not records:
        raise DataError("no records to convert")
    if messages_field is None and (prompt_field is None or response_field is None):
        auto_p, auto_r, auto_m = _detect(records[0])
        if auto_m and prompt_field is None and response_field is None:
            messages_field = auto_m
        elif auto_m:
            raise DataError("records hold chat 'messages'; name both prompt_field and response_field "
                            "to read other fields instead")
        else:
            prompt_field, response_field = prompt_field or auto_p, response_field or auto_r
    out = []
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise DataError(f"record {i} is a {type(row).__name__}, not a dict of fields")
        if messages_field is not None:
            out.append(Example(None, None, _messages(row, messages_field, i)))
            continue
        prompt = _text(row, prompt_field, i)
        extra = _text(row, "input", i, required=False) if prompt_field == "instruction" else None
        if extra:
            prompt = f"{prompt}\n\n{extra}"
        out.append(Example(prompt, _text(row, response_field, i)))
    return out


def _chat(example: Example) -> list[dict]:
    if example.messages is not None:
        return example.messages
    msgs = [{"role": "user", "content": example.prompt}]
    return msgs + ([{"role": "assistant", "content": example.response}] if example.response is not None else [])


def _alpaca_parts(example: Example) -> tuple[str, str | None]:
    if example.messages is None:
        return example.prompt, example.response
    roles = [m["role"] for m in example.messages]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise DataError("the alpaca template takes one user turn and one assistant reply; "
                        "use template='chat' for multi-turn messages")
    return example.messages[-2]["content"], example.messages[-1]["content"]


def check_template(template: str) -> None:
    if template not in TEMPLATES:
        raise ConfigError(f"unknown template {template!r}: choose one of {', '.join(TEMPLATES)}")


def render_prompt(example: Example, tokenizer, template: str) -> str:
    """The prompt text the model is fed (and generation continues from)."""
    check_template(template)
    if template == "alpaca":
        return ALPACA_PROMPT.format(query=_alpaca_parts(example)[0])
    msgs = _chat(example)
    if msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError("template='chat' needs a tokenizer with a chat template; this one has none "
                         "(use template='alpaca')")
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def render_response(example: Example, tokenizer, template: str) -> tuple[str, bool]:
    """(response text, whether eos must still be appended) for training."""
    check_template(template)
    if template == "alpaca":
        return " " + _alpaca_parts(example)[1].strip(), True
    prompt = render_prompt(example, tokenizer, template)
    full = tokenizer.apply_chat_template(_chat(example), tokenize=False)
    if not full.startswith(prompt):
        raise DataError("this tokenizer's chat template renders the conversation differently from its "
                         "generation prompt, so the response cannot be separated; use template='alpaca'")
    response = full[len(prompt):].rstrip()
    eos = tokenizer.eos_token or ""
    return response, not (eos and response.endswith(eos))
