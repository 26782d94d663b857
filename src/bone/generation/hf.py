"""HFDecoder: Hugging Face causal LMs with their KV cache, in our own decoding loop.

Why not `model.generate` with a streamer: RWKV needs its own loop (a recurrent state), and one loop
for both families means one sampler, one stop rule and one streaming path, tested once; a chat
keeps the cache between turns and keeps the part of it that the next turn's prompt shares (it
drops only the tokens after the first difference). Per token this does one forward of (B, 1) ids
with the cache, nothing else. Batches are left-padded: `position_ids` count each row's own tokens
from 0, and the attention mask hides the pads (tests check the tokens equal `model.generate`'s).
"""
from __future__ import annotations

import inspect

import torch
from torch import Tensor

from ..data.batch import left_pad
from .decoder import Decoder


class HFDecoder(Decoder):
    can_rewind = True

    def __init__(self, model):
        self.model = model
        params = inspect.signature(model.forward).parameters
        # transformers 5 calls the cache `cache` (`past_key_values` before, deprecated since)
        self._cache_name = "cache" if "cache" in params else "past_key_values"
        # only the last position's logits are needed: no (B, T, vocab) tensor for a long prompt
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        config = model.config
        self.max_tokens = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        self.cache = None
        self.mask: Tensor | None = None  # (B, tokens seen) 1 = real token, 0 = left pad
        self.next_pos: Tensor | None = None  # (B,) position of each row's next token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _forward(self, ids: Tensor, positions: Tensor) -> Tensor:
        out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=positions, use_cache=True,
                         **{self._cache_name: self.cache}, **self._last_only)
        self.cache = out[self._cache_name]
        return out.logits[:, -1].float()

    def start(self, rows):
        ids, mask = left_pad(rows, 0)
        ids, self.mask = ids.to(self.device), mask.to(self.device)
        self.cache = None
        positions = (self.mask.cumsum(1) - 1).clamp(min=0)
        self.next_pos = self.mask.sum(1)
        return self._forward(ids, positions)

    def step(self, tokens):
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], 1)
        positions = self.next_pos[:, None]
        self.next_pos = self.next_pos + 1
        return self._forward(tokens[:, None].to(self.device), positions)

    def extend(self, ids):
        n = len(ids)
        self.mask = torch.cat([self.mask, self.mask.new_ones(1, n)], 1)
        positions = self.next_pos[:, None] + torch.arange(n, device=self.device)
        self.next_pos = self.next_pos + n
        return self._forward(torch.tensor([ids], device=self.device), positions)

    def rewind(self, n):
        if n:
            self.cache.crop(-n)  # a negative count removes that many tokens (transformers 4 and 5)
            self.mask, self.next_pos = self.mask[:, :-n], self.next_pos - n

    def keep(self, rows):
        self.cache.batch_select_indices(rows)
        self.mask, self.next_pos = self.mask[rows], self.next_pos[rows]
