"""`generate`: replies to many prompts, in batches of similar length (left-padded), greedy or
sampled, optionally streamed as text pieces while the tokens come."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import ConfigError
from .config import GenerationConfig
from .decoder import check_length, decoder_for
from .formats import PromptFormat
from .loop import EOS, run, stop_ids
from .prompt_file import Prompt
from .sampling import Sampler
from .stream import TextStream, decode


@dataclass
class Completion:
    text: str  # the reply as text (special tokens and the stop token left out)
    token_ids: list[int]  # every generated token, the stop token included
    finish_reason: str  # "eos" (a stop token ended it), "length" (max_new_tokens reached), "interrupted"
    prompt_tokens: int  # tokens of the prompt it continues
    cached_tokens: int = 0  # of those, how many a chat took from its cache instead of reading them again


def content(tokens: list[int], finish_reason: str) -> list[int]:
    """The reply's own tokens: without the stop token that ended it."""
    return tokens[:-1] if finish_reason == EOS else tokens


@contextmanager
def eval_mode(model) -> Iterator[None]:
    """model.eval() inside, the previous train/eval mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def generate(model, tokenizer, prompts: Sequence[Prompt | list[dict]], fmt: PromptFormat,
             cfg: GenerationConfig | None = None, *, batch_size: int = 8,
             on_text: Callable[[int, str], None] | None = None) -> list[Completion]:
    """One Completion per prompt (Prompt objects or message lists ending with the user's turn), in
    order. Every prompt is rendered (and checked) before anything runs. on_text(i, piece) receives
    prompt i's text as it is generated; the pieces of prompt i join to completions[i].text."""
    rows = [fmt.prompt_ids(p.messages if isinstance(p, Prompt) else p) for p in prompts]
    return generate_ids(model, tokenizer, rows, cfg, batch_size=batch_size, on_text=on_text)


def generate_ids(model, tokenizer, rows: Sequence[list[int]], cfg: GenerationConfig | None = None, *,
                 batch_size: int = 8, on_text: Callable[[int, str], None] | None = None) -> list[Completion]:
    """generate() for prompts given as token ids. Errors name a prompt by its number from 1 (the line of a
    prompt file: read_prompt_file refuses blank lines between prompts)."""
    cfg = cfg or GenerationConfig()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive whole number, got {batch_size}")
    decoder, stops = decoder_for(model), stop_ids(model, tokenizer)
    for i, row in enumerate(rows):
        check_length(decoder, len(row), cfg.max_new_tokens, f"prompt {i + 1}", "shorten it or lower max_new_tokens")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch: little padding
    pick = Sampler(cfg, next(model.parameters()).device)
    done: dict[int, Completion] = {}
    with eval_mode(model):
        for first in range(0, len(order), batch_size):
            batch = order[first:first + batch_size]
            tokens = {i: [] for i in batch}
            streams = {i: TextStream(tokenizer) for i in batch} if on_text else {}
            for row, token, end in run(decoder, decoder.start([rows[i] for i in batch]), pick, stops,
                                       cfg.max_new_tokens):
                i = batch[row]
                tokens[i].append(token)
                piece = streams[i].add(token, end, EOS) if on_text else ""
                if piece:
                    on_text(i, piece)
                if end:
                    text = streams[i].text if on_text else decode(tokenizer, content(tokens[i], end))
                    done[i] = Completion(text, tokens[i], end, len(rows[i]))
    return [done[i] for i in range(len(rows))]
