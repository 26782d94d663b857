"""ChatSession: a conversation with one model, its replies streamed as text pieces.

The model keeps what it has read between turns, so a turn reads only what is new:
  Hugging Face models re-render the whole history with the prompt format (exactly what a fresh
    `generate` on the conversation would read) and keep the KV cache up to the first token that
    differs from what the cache holds (usually all of it: only the new turn is read).
  Recurrent models (RWKV) cannot drop tokens from a state, so the history is kept as the tokens
    the model read and wrote, and a turn feeds only the end of the last reply and the new turn
    (`PromptFormat.next_turn_ids`) on top of the state.
Switching adapters (`use_adapter`) keeps the history and drops the cache: the next turn reads the
history again, once, with the new adapter. `reset()` forgets the history.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from ..errors import DataError, UsageError
from .batch import Completion, content, eval_mode
from .config import GenerationConfig
from .decoder import check_length, decoder_for
from .formats import PromptFormat
from .loop import EOS, run, stop_ids
from .sampling import Sampler
from .stream import TextStream

INTERRUPTED = "interrupted"  # finish_reason of a reply cut short (its consumer stopped, or an error)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ChatSession:
    """send(text) -> iterator of reply pieces; messages; reset(); use_adapter(name)."""

    def __init__(self, model, tokenizer, fmt: PromptFormat, cfg: GenerationConfig | None = None, *,
                 system: str | None = None, switch_adapter: Callable[[str], None] | None = None):
        """system: a system message opening every conversation (chat templates only; the alpaca
        template has none and leaves it out). switch_adapter(name): makes the named adapter the
        model's active one, raising bone.errors.AdapterError for an unknown name (wired by the caller)."""
        self.model, self.tokenizer, self.fmt = model, tokenizer, fmt
        self.cfg = cfg or GenerationConfig()
        self.system = system
        self._switch = switch_adapter
        self.adapter: str | None = None  # the name last given to use_adapter
        self.decoder = decoder_for(model)
        self.sampler = Sampler(self.cfg, next(model.parameters()).device)
        self.stops = stop_ids(model, tokenizer)
        self.last: Completion | None = None  # the last reply
        self._cached: list[int] = []  # the tokens the decoder's cache holds, in order
        self.reset()

    # --- conversation ----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages: list[dict] = [{"role": "system", "content": self.system}] if self.system else []
        self._tokens: list[int] | None = None  # recurrent models: the conversation as the model read and wrote it

    def drop_cache(self) -> None:
        """Forget what the model has read: call after changing its weights or its active adapter."""
        self._cached, self._tokens = [], None

    def use_adapter(self, name: str, fmt: PromptFormat | None = None) -> None:
        """Switch to the named adapter (and to `fmt`, the prompt format it was trained with, if given).
        The history stays and is read again, once, by the next turn. An unknown name changes nothing."""
        if self._switch is None:
            raise UsageError("this chat has no named adapters to switch between")
        self._switch(name)
        self.adapter = name
        self.fmt = fmt or self.fmt
        self.drop_cache()

    # --- one turn ----------------------------------------------------------------------------
    def _turn_ids(self, text: str) -> list[int]:
        msgs = self.messages + [{"role": "user", "content": text}]
        if self.decoder.can_rewind or self._tokens is None:
            return self.fmt.prompt_ids(msgs)
        return self._tokens + self.fmt.next_turn_ids(self.messages, text)

    def _read(self, ids: list[int]):
        """Logits after `ids`, feeding only what the cache does not hold; returns (logits, cached)."""
        common = min(_common_prefix(self._cached, ids), len(ids) - 1)  # at least one token is fed
        if self._cached and common == len(self._cached):
            logits = self.decoder.extend(ids[common:])
        elif common and self.decoder.can_rewind:
            self.decoder.rewind(len(self._cached) - common)
            logits = self.decoder.extend(ids[common:])
        else:
            common, logits = 0, self.decoder.start([ids])
        self._cached = list(ids)
        return logits, common

    def send(self, text: str) -> Iterator[str]:
        """The reply to `text`, streamed as text pieces; when the iteration ends, the turn is in
        `messages` and the reply in `last`. Bad input raises here, before anything runs. Stopping
        early keeps the reply so far (finish_reason "interrupted") and drops the cache, so the next
        turn reads the history again."""
        if not isinstance(text, str) or not text.strip():
            raise DataError("the message is empty: type some text")
        ids = self._turn_ids(text)
        check_length(self.decoder, len(ids), self.cfg.max_new_tokens, "the conversation",
                     "start over (reset, /reset in bone chat) or lower max_new_tokens")
        return self._reply(text, ids)

    def _reply(self, text: str, ids: list[int]) -> Iterator[str]:
        stream, tokens, end, cached = TextStream(self.tokenizer), [], None, 0
        try:
            with eval_mode(self.model):
                logits, cached = self._read(ids)
                for _, token, end in run(self.decoder, logits, self.sampler, self.stops, self.cfg.max_new_tokens):
                    tokens.append(token)
                    piece = stream.add(token, end, EOS)
                    if piece:
                        yield piece
        finally:
            self._commit(text, ids, tokens, end, stream, cached)

    def _commit(self, text, ids, tokens, end, stream, cached) -> None:
        if end is None:  # cut short: the cache may hold part of a step
            self.drop_cache()
            if not tokens:
                return
            end = INTERRUPTED
            stream.finish()
        else:
            self._cached += tokens[:-1]  # the last token was never fed
            self._tokens = ids + content(tokens, end)
        self.messages += [{"role": "user", "content": text}, {"role": "assistant", "content": stream.text}]
        self.last = Completion(stream.text, tokens, end, len(ids), cached)
