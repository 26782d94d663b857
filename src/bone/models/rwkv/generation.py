"""Generation for RWKV on its recurrent state: `RWKVDecoder` (used by bone.generation for
generate and chat) and the greedy `model.generate` built on it.

Each prompt row runs once through the chunked (parallel) form, then all rows advance together one
token at a time on their states; no token is ever read twice. A chat keeps the state after a
reply and feeds only the next turn's tokens (`extend`); a state cannot be rewound.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...errors import ConfigError, UsageError
from ...generation.decoder import Decoder


def _stack_states(states: list[list[tuple]]) -> list[tuple]:
    """Per-row states (batch 1 each) -> one batched state."""
    return [tuple(torch.cat(parts, 0) for parts in zip(*layer)) for layer in zip(*states)]


class RWKVDecoder(Decoder):
    can_rewind = False

    def __init__(self, model):
        self.model = model
        self.state: list[tuple] | None = None  # per layer (att shift, wkv, ffn shift), batch first

    @torch.no_grad()
    def _forward(self, ids: Tensor, state) -> tuple[Tensor, list]:
        out = self.model(input_ids=ids.to(self.model.device), state=state)
        return out.logits[:, -1].float(), out.state

    def start(self, rows):
        logits, states = [], []
        for row in rows:
            last, state = self._forward(torch.tensor([row]), None)
            logits.append(last)
            states.append(state)
        self.state = _stack_states(states)
        return torch.cat(logits, 0)

    def step(self, tokens):
        logits, self.state = self._forward(tokens[:, None], self.state)
        return logits

    def extend(self, ids):
        logits, self.state = self._forward(torch.tensor([ids]), self.state)
        return logits

    def keep(self, rows):
        self.state = [tuple(t.index_select(0, rows.to(t.device)) for t in layer) for layer in self.state]


def greedy_generate(model, input_ids: Tensor, attention_mask: Tensor | None, max_new_tokens: int,
                    eos_token_id, pad_token_id) -> Tensor:
    """input_ids (B, T) -> (B, T + n), n <= max_new_tokens (fewer when every row hit eos); rows
    that stopped early are filled with pad_token_id."""
    from ...generation.loop import run

    if input_ids.dim() != 2:
        raise UsageError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    if max_new_tokens == 0:
        return input_ids
    rows = []
    for i in range(input_ids.shape[0]):
        rows.append(input_ids[i][mask[i]].tolist())
        if not rows[-1]:
            raise UsageError(f"row {i} of the batch has no prompt tokens (its attention_mask is all 0)")
    decoder = RWKVDecoder(model)
    new: list[list[int]] = [[] for _ in rows]
    for row, token, _ in run(decoder, decoder.start(rows), lambda logits: logits.argmax(-1), set(eos), max_new_tokens):
        new[row].append(token)
    width = max(map(len, new))
    out = torch.full((len(rows), width), pad, dtype=input_ids.dtype)
    for i, tokens in enumerate(new):
        out[i, :len(tokens)] = torch.tensor(tokens, dtype=input_ids.dtype)
    return torch.cat([input_ids, out.to(input_ids.device)], 1)
