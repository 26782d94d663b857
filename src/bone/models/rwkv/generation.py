"""Greedy generation for RWKV: each prompt row runs once through the chunked form, then all rows
advance together one token at a time on their recurrent states."""
from __future__ import annotations

import torch
from torch import Tensor
from ...errors import ConfigError, UsageError


def _stack_states(states: list[list[tuple]]) -> list[tuple]:
    """Per-row states (batch 1 each) -> one batched state."""
    return [tuple(torch.cat(parts, 0) for parts in zip(*layer)) for layer in zip(*states)]


def greedy_generate(model, input_ids: Tensor, attention_mask: Tensor | None, max_new_tokens: int,
                    eos_token_id, pad_token_id) -> Tensor:
    """input_ids (B, T) -> (B, T + n), n <= max_new_tokens (fewer when every row hit eos)."""
    if input_ids.dim() != 2:
        raise UsageError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    eos = torch.tensor([] if eos_token_id is None else
                       [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id),
                       dtype=input_ids.dtype, device=input_ids.device)
    pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if len(eos) else 0)
    if max_new_tokens == 0:
        return input_ids
    last_logits, states = [], []
    for row in range(input_ids.shape[0]):
        prompt = input_ids[row][mask[row]]
        if prompt.numel() == 0:
            raise UsageError(f"row {row} of the batch has no prompt tokens (its attention_mask is all 0)")
        out = model(input_ids=prompt.unsqueeze(0))
        last_logits.append(out.logits[:, -1])
        states.append(out.state)
    logits, state = torch.cat(last_logits, 0), _stack_states(states)
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    new_tokens = []
    for step in range(max_new_tokens):
        token = logits.argmax(-1).to(input_ids.dtype)
        token = torch.where(done, torch.full_like(token, pad), token)
        new_tokens.append(token)
        done = done | torch.isin(token, eos)
        if done.all() or step == max_new_tokens - 1:
            break
        out = model(input_ids=token.unsqueeze(1), state=state)
        logits, state = out.logits[:, -1], out.state
    return torch.cat([input_ids, torch.stack(new_tokens, 1)], 1)
