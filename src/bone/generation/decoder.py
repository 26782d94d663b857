"""Decoder: feeds tokens to one model family and keeps what it needs to go on (a KV cache, a
recurrent state). The decoding loop, the sampler and the text streams are shared by every family;
a family only says how to read a batch of prompts and how to take one more token per row.

Each family gives its decoder through `Family.decoder(model)` (bone.models): `HFDecoder`
(bone.generation.hf, KV cache) and `RWKVDecoder` (bone.models.rwkv.generation, recurrent state).
"""
from __future__ import annotations

from torch import Tensor

from ..errors import DataError


class Decoder:
    """One batch of sequences being decoded. Logits are float32 (B, vocab), of each row's last token.
    Forwards run under torch.no_grad; the model's train/eval mode is the caller's business."""

    can_rewind: bool  # whether rewind() works (a KV cache can drop its last tokens; a recurrent state cannot)
    max_tokens: int | None = None  # the most positions a sequence may have (the model's context); None = no limit

    def start(self, rows: list[list[int]]) -> Tensor:
        """Read a new batch of prompts (any lengths, at least one token each), dropping what was kept."""
        raise NotImplementedError

    def step(self, tokens: Tensor) -> Tensor:
        """Feed one token (B,) per row."""
        raise NotImplementedError

    def extend(self, ids: list[int]) -> Tensor:
        """Feed more tokens to a one-row batch (a chat's next turn); (1, vocab) logits of the last."""
        raise NotImplementedError

    def rewind(self, n: int) -> None:
        """Forget the last n tokens of a one-row batch (only where can_rewind)."""
        raise NotImplementedError

    def keep(self, rows: Tensor) -> None:
        """Go on with these rows (indices into the current batch) only; finished rows leave the batch."""
        raise NotImplementedError


def check_length(decoder: Decoder, prompt_tokens: int, max_new_tokens: int, what: str, fix: str) -> None:
    """Raise DataError when `what` (prompt_tokens long) plus max_new_tokens passes the model's context."""
    limit = decoder.max_tokens
    if limit is not None and prompt_tokens + max_new_tokens > limit:
        raise DataError(f"{what} has {prompt_tokens} tokens; with max_new_tokens={max_new_tokens} it would pass "
                        f"the model's context of {limit} tokens: {fix}")


def decoder_for(model) -> Decoder:
    """The decoder of `model`'s family."""
    from ..models import family_of_model

    return family_of_model(model).decoder(model)
