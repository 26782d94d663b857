"""Prompt formats: a conversation (messages ending with the user's turn) -> the token ids the
model continues, exactly as training tokenized its prompts (`bone.data.templates` / `tokenize`).

  alpaca  the training template: each turn is "Below is an instruction ... ### Response:" and
          each earlier reply follows it after one space and ends with eos, the way packed
          training rows put examples one after another. A system message is left out, as in training.
  chat    the tokenizer's chat template (`apply_chat_template` with the generation prompt).

A tokenizer without a chat template (e.g. RWKV's World tokenizer) asked for "chat" gets the alpaca
format, whose `note` says so. Besides the full prompt, a format gives the tokens that follow a
reply kept token for token (its end and the next turn), which a recurrent model's chat feeds
on top of its state.
"""
from __future__ import annotations

from pathlib import Path

from ..data.templates import Example, check_template, render_response
from ..data.tokenize import encode_prompt
from ..errors import DataError, ModelError

REPLY_MARK = "bone-reply-7d1e5f"  # stands for a reply inside a rendered chat template


def check_messages(messages: list[dict], where: str = "the conversation") -> None:
    """Raise DataError unless `messages` are {"role", "content"} dicts alternating user/assistant
    (after an optional first system message) and ending with a user message."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: messages must be a non-empty list of {{\"role\": ..., \"content\": ...}}")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {j} needs string 'role' and 'content' fields")
    turns = messages[1:] if messages[0]["role"] == "system" else messages
    for j, m in enumerate(turns):
        want = "user" if j % 2 == 0 else "assistant"
        if m["role"] != want:
            raise DataError(f"{where}: message {j + len(messages) - len(turns)} has role {m['role']!r} where "
                            f"{want!r} was expected (after an optional system message, roles alternate "
                            f"user, assistant, ..., ending with user)")
    if turns[-1:] == [] or turns[-1]["role"] != "user":
        raise DataError(f"{where}: the last message must be the user's (the model writes the reply)")


class PromptFormat:
    """How a conversation becomes prompt ids."""

    name: str  # the template's name, "alpaca" or "chat"

    def __init__(self, tokenizer, note: str | None = None):
        self.tokenizer = tokenizer
        self.note = note  # something to tell the user once (e.g. why this template is used), or None

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Ids of a whole conversation that ends with the user's turn, ready for the reply."""
        raise NotImplementedError

    def next_turn_ids(self, messages: list[dict], user: str) -> list[int]:
        """The ids that come after the last reply's own tokens (`messages` end with it): the reply's
        end and the new user turn, ready for its reply."""
        raise NotImplementedError


class AlpacaFormat(PromptFormat):
    name = "alpaca"

    def _turn(self, user: str) -> list[int]:
        return encode_prompt(self.tokenizer, Example(user, None), "alpaca")

    def _reply(self, user: str, reply: str) -> list[int]:
        text, add_eos = render_response(Example(user, reply), self.tokenizer, "alpaca")
        return list(self.tokenizer.encode(text, add_special_tokens=False)) + [self.tokenizer.eos_token_id] * add_eos

    def prompt_ids(self, messages):
        check_messages(messages)
        turns = [m["content"] for m in messages if m["role"] != "system"]
        ids = []
        for user, reply in zip(turns[:-1:2], turns[1::2]):
            ids += self._turn(user) + self._reply(user, reply)
        return ids + self._turn(turns[-1])

    def next_turn_ids(self, messages, user):
        return [self.tokenizer.eos_token_id] + self._turn(user)


class ChatTemplateFormat(PromptFormat):
    name = "chat"

    def prompt_ids(self, messages):
        check_messages(messages)
        return encode_prompt(self.tokenizer, Example(None, None, messages), "chat")

    def next_turn_ids(self, messages, user):
        marked = messages[:-1] + [{"role": "assistant", "content": REPLY_MARK}, {"role": "user", "content": user}]
        text = self.tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=True)
        if text.count(REPLY_MARK) != 1:
            raise ModelError("this chat template rewrites earlier replies, so a recurrent model's chat cannot go "
                             "on from its state; use the alpaca template")
        return list(self.tokenizer.encode(text.split(REPLY_MARK)[1], add_special_tokens=False))


def prompt_format(tokenizer, template: str = "chat") -> PromptFormat:
    """The format for `template` ("alpaca" or "chat"); "chat" on a tokenizer without a chat template
    falls back to alpaca, with a note saying so."""
    check_template(template)
    if template == "alpaca":
        return AlpacaFormat(tokenizer)
    if getattr(tokenizer, "chat_template", None) is None:
        return AlpacaFormat(tokenizer, note="this model's tokenizer has no chat template: using the training "
                                            "template (alpaca) instead")
    return ChatTemplateFormat(tokenizer)


def trained_template(adapter: str | Path) -> str | None:
    """The template an adapter was trained with: `data.template` of the config.yaml that `bone train`
    writes into its run folder (the adapter's parent, or 3 levels up for a checkpoint's adapter);
    None when there is no such file."""
    import yaml

    for folder in list(Path(adapter).resolve().parents)[:3]:
        config = folder / "config.yaml"
        if config.is_file():
            data = yaml.safe_load(config.read_text()) or {}
            template = (data.get("data") or {}).get("template") if isinstance(data, dict) else None
            return template if isinstance(template, str) else None
    return None
