"""Token ids -> text pieces while they are generated, for one reply.

A token does not always end on a character: byte-level vocabularies split a multi-byte
character over several tokens, and SentencePiece-style decoders put a word's leading space on
the word. So a piece is only given out once the text it completes is settled: the newest tokens
are decoded together with the tokens just before them (the window keeps the spacing right), the
new text is what that window adds, and it is held back while it ends in an incomplete character
(U+FFFD). `finish()` gives whatever is left. The pieces join to exactly `decode(all tokens)`;
each step decodes a few tokens, never the whole reply.

One kind of decoder can change text after it was given out: a byte-fallback decoder (Llama-2 /
Mistral style `<0xNN>` tokens) turns a whole run of byte tokens into U+FFFD once the run stops
being valid UTF-8. Only a model writing invalid bytes meets this; the stream then goes on with
the decoder's new text after what it gave out (`text` is always what was given out).
"""
from __future__ import annotations

REPLACEMENT = "\ufffd"  # what a decoder gives for the bytes of a character that is not complete yet


def decode_kwargs(tokenizer) -> dict:
    """decode() options that keep decoding position-independent: Hugging Face tokenizers may clean up
    spaces before punctuation, which would change text that was already streamed."""
    return {"clean_up_tokenization_spaces": False} if hasattr(tokenizer, "clean_up_tokenization_spaces") else {}


def decode(tokenizer, ids: list[int]) -> str:
    """The text of `ids` as a reply shows it (special tokens left out)."""
    return tokenizer.decode(ids, skip_special_tokens=True, **decode_kwargs(tokenizer))


def _shared(a: str, b: str) -> int:
    """Length of the common start of a and b."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


class TextStream:
    """push(token) -> the new text it settles ("" while a character is incomplete); finish() -> the rest.
    `text` is everything given out so far."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._start = 0  # first token of the decode window
        self._done = 0  # tokens whose text has been given out

    def _advance(self, last: bool) -> str:
        window = self.ids[self._start:]
        before = decode(self.tokenizer, window[: self._done - self._start])
        after = decode(self.tokenizer, window)
        if not last and (after == before or after.endswith(REPLACEMENT)):
            return ""
        piece = after[_shared(before, after):]
        self._start, self._done = self._done, len(self.ids)
        self.text += piece
        return piece

    def push(self, token: int) -> str:
        self.ids.append(token)
        return self._advance(last=False)

    def finish(self) -> str:
        """The text not given out yet (an incomplete character at the very end becomes U+FFFD)."""
        return self._advance(last=True) if self._done < len(self.ids) else ""

    def add(self, token: int, end: str | None, stop: str) -> str:
        """A generated token as the decoding loop reports it: `end` is None while the reply goes on,
        else why it ended; a token that ended it with reason `stop` adds no text."""
        piece = self.push(token) if end != stop else ""
        return piece + self.finish() if end else piece
