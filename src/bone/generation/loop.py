"""The decoding loop every family shares: pick a token per row, stop rows at a stop token or at
the length limit, drop finished rows from the batch, feed the others one more token."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .decoder import Decoder

EOS, LENGTH = "eos", "length"  # why a row stopped: a stop token came / max_new_tokens were generated


def stop_ids(model, tokenizer) -> set[int]:
    """Token ids that end a reply: the tokenizer's eos and the model's generation_config eos ids."""
    ids = {tokenizer.eos_token_id}
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(extra) if isinstance(extra, (list, tuple)) else {extra}
    return {int(i) for i in ids if i is not None}


def run(decoder: Decoder, logits: Tensor, pick, stops: set[int], max_new_tokens: int
        ) -> Iterator[tuple[int, int, str | None]]:
    """Yield (row, token, None) per generated token and (row, token, EOS | LENGTH) for a row's last.

    logits: (B, vocab) of each row's last prompt token, from decoder.start / extend; pick: logits ->
    tokens (a Sampler). A row's last token is not fed to the model (nothing would read its output)."""
    active = list(range(logits.shape[0]))
    for n in range(1, max_new_tokens + 1):
        tokens = pick(logits)
        going = []
        for j, (row, token) in enumerate(zip(active, tokens.tolist())):
            end = EOS if token in stops else LENGTH if n == max_new_tokens else None
            if end is None:
                going.append(j)
            yield row, token, end
        if not going:
            return
        if len(going) < len(active):
            keep = torch.tensor(going, device=tokens.device)
            decoder.keep(keep)
            tokens, active = tokens[keep], [active[j] for j in going]
        logits = decoder.step(tokens)
