"""What RWKV-6 and RWKV-7 share: the token shift, zero-initialised parameters, and the block.

A block is pre-norm residual: x = ln0(x) (block 0 only); x += att(ln1(x)); x += ffn(ln2(x)). The
versions differ only in their time-mix (`att`) and channel-mix (`ffn`) modules, which share one
interface:

    att(x, v_first, shift, wkv) -> (out, v_first, new shift, new wkv)   (x060 passes v_first through)
    ffn(x, shift)               -> (out, new shift)

with x (B, T, C), shifts (B, C) (the last layer-normed input, as the official runtime keeps it)
and wkv (B, H, N, N) fp32.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import RWKVConfig


def token_shift(x: Tensor, prev: Tensor | None) -> Tensor:
    """x shifted one step right along T; row 0 is `prev` (B, C) or zeros. (B, T, C)."""
    first = torch.zeros_like(x[:, :1]) if prev is None else prev.unsqueeze(1).to(x.dtype)
    return torch.cat([first, x[:, :-1]], 1)


def param(*shape: int) -> nn.Parameter:
    """A zero parameter of `shape` (every value comes from the checkpoint)."""
    return nn.Parameter(torch.zeros(*shape))


class Block(nn.Module):
    """ln0 (block 0), ln1, ln2 and the version's `att` and `ffn`, named as BlinkDL's checkpoints."""

    def __init__(self, cfg: RWKVConfig, layer_id: int, att: nn.Module, ffn: nn.Module):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.ln0 = nn.LayerNorm(cfg.n_embd) if layer_id == 0 else None
        self.att = att
        self.ffn = ffn

    def forward(self, x: Tensor, v_first: Tensor | None, state: tuple | None = None):
        """-> (x, v_first, (att_shift, wkv, ffn_shift))."""
        att_shift, wkv_state, ffn_shift = state if state is not None else (None, None, None)
        if self.ln0 is not None:
            x = self.ln0(x)
        h, v_first, att_shift, wkv_state = self.att(self.ln1(x), v_first, att_shift, wkv_state)
        x = x + h
        h, ffn_shift = self.ffn(self.ln2(x), ffn_shift)
        return x + h, v_first, (att_shift, wkv_state, ffn_shift)
