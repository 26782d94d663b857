"""RWKV-7 ("x070", Goose) time-mix, channel-mix and block, named exactly as BlinkDL's checkpoints.

Shapes and the module interface are in `block`. Parameter shapes are the checkpoint's own
((1, 1, C) mixes, (C, D)/(D, C) low-rank pairs, (H, N) r_k).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .block import Block, param, token_shift
from .config import RWKVConfig
from .ops import wkv7

DECAY_SCALE = math.exp(-0.5)  # log decay = -exp(-0.5) * sigmoid(w): decay in (exp(-exp(-0.5)), 1)


class TimeMix7(nn.Module):
    """r, w, k, v, a, g from token-shift mixes; WKV-7; group norm; r.k bonus; gate; output."""

    def __init__(self, cfg: RWKVConfig, first: bool, with_v_params: bool):
        super().__init__()
        C, H, N = cfg.n_embd, cfg.n_head, cfg.head_size
        self.first, self.n_head, self.chunk_size = first, H, cfg.chunk_size
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            setattr(self, name, param(1, 1, C))
        self.w1, self.w2, self.w0 = param(C, cfg.decay_lora), param(cfg.decay_lora, C), param(1, 1, C)
        self.a1, self.a2, self.a0 = param(C, cfg.aaa_lora), param(cfg.aaa_lora, C), param(1, 1, C)
        if with_v_params:  # block 0 stores them in BlinkDL files but its value residual is v itself
            self.v1, self.v2, self.v0 = param(C, cfg.mv_lora), param(cfg.mv_lora, C), param(1, 1, C)
        self.g1, self.g2 = param(C, cfg.gate_lora), param(cfg.gate_lora, C)
        self.k_k, self.k_a, self.r_k = param(1, 1, C), param(1, 1, C), param(H, N)
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)

    def forward(self, x: Tensor, v_first: Tensor | None, shift: Tensor | None, wkv_state: Tensor | None):
        """x (B, T, C) -> (out (B, T, C), v_first, new shift (B, C), new wkv state)."""
        B, T, C = x.shape
        H = self.n_head
        xx = token_shift(x, shift) - x
        xr, xw, xk, xv, xa, xg = (x + xx * m for m in (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r = self.receptance(xr)
        k = self.key(xk)
        v = self.value(xv)
        lw = -DECAY_SCALE * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(B, T, H, -1), dim=-1, p=2.0).view(B, T, C)
        k = k * (1 + (a - 1) * self.k_a)
        if self.first:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        heads = lambda t: t.view(B, T, H, -1)  # noqa: E731
        y, wkv_state = wkv7(heads(r), heads(lw), heads(k), heads(v), heads(-kk), heads(kk * a), wkv_state,
                            self.chunk_size)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        bonus = (heads(r) * heads(k) * self.r_k).sum(-1, keepdim=True) * heads(v)
        y = y + bonus.view(B, T, C)
        return self.output(y * g), v_first, x[:, -1], wkv_state


class ChannelMix7(nn.Module):
    """value(relu(key(x + (shift(x) - x) * x_k))^2)."""

    def __init__(self, cfg: RWKVConfig):
        super().__init__()
        self.x_k = param(1, 1, cfg.n_embd)
        self.key = nn.Linear(cfg.n_embd, cfg.dim_ffn, bias=False)
        self.value = nn.Linear(cfg.dim_ffn, cfg.n_embd, bias=False)

    def forward(self, x: Tensor, shift: Tensor | None) -> tuple[Tensor, Tensor]:
        k = x + (token_shift(x, shift) - x) * self.x_k
        return self.value(torch.relu(self.key(k)).square()), x[:, -1]


class Block7(Block):
    """An RWKV-7 block; block 0's time-mix sets v_first, the others mix it into v."""

    def __init__(self, cfg: RWKVConfig, layer_id: int):
        first = layer_id == 0
        super().__init__(cfg, layer_id, TimeMix7(cfg, first, with_v_params=not first or cfg.layer0_v_params),
                         ChannelMix7(cfg))
