"""RWKV-6 ("x060", Finch) time-mix, channel-mix and block, named exactly as BlinkDL's checkpoints.

Shapes and the module interface are in `block`. Data-dependent token shift:
m = tanh((x + dx * maa_x) @ maa_w1) @ maa_w2 gives five mixes (w, k, v, r, g); the decay is
exp(-exp(time_decay + tanh(xw @ decay_w1) @ decay_w2)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .block import Block, param, token_shift
from .config import RWKVConfig
from .ops import wkv6


class TimeMix6(nn.Module):
    """r, k, v, g, w from data-dependent mixes; WKV-6 with bonus time_faaaa; group norm; gate."""

    def __init__(self, cfg: RWKVConfig):
        super().__init__()
        C, H, N, D = cfg.n_embd, cfg.n_head, cfg.head_size, cfg.mix_lora
        self.n_head, self.chunk_size = H, cfg.chunk_size
        for name in ("time_maa_x", "time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g"):
            setattr(self, name, param(1, 1, C))
        self.time_maa_w1, self.time_maa_w2 = param(C, 5 * D), param(5, D, C)
        self.time_decay = param(1, 1, C)
        self.time_decay_w1, self.time_decay_w2 = param(C, cfg.decay_lora), param(cfg.decay_lora, C)
        self.time_faaaa = param(H, N)
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.gate = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=64e-5)

    def forward(self, x: Tensor, v_first: Tensor | None, shift: Tensor | None, wkv_state: Tensor | None):
        """x (B, T, C) -> (out (B, T, C), v_first (passed through), new shift (B, C), new wkv state)."""
        B, T, C = x.shape
        H = self.n_head
        xx = token_shift(x, shift) - x
        m = torch.tanh((x + xx * self.time_maa_x) @ self.time_maa_w1).view(B, T, 5, -1)
        mw, mk, mv, mr, mg = torch.einsum("btfd,fdc->fbtc", m, self.time_maa_w2).unbind(0)
        xw = x + xx * (self.time_maa_w + mw)
        xk = x + xx * (self.time_maa_k + mk)
        xv = x + xx * (self.time_maa_v + mv)
        xr = x + xx * (self.time_maa_r + mr)
        xg = x + xx * (self.time_maa_g + mg)
        r, k, v = self.receptance(xr), self.key(xk), self.value(xv)
        g = F.silu(self.gate(xg))
        lw = -torch.exp((self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2).float())
        heads = lambda t: t.view(B, T, H, -1)  # noqa: E731
        y, wkv_state = wkv6(heads(r), heads(lw), heads(k), heads(v), self.time_faaaa, wkv_state, self.chunk_size)
        y = self.ln_x(y.reshape(B * T, C)).view(B, T, C)
        return self.output(y * g), v_first, x[:, -1], wkv_state


class ChannelMix6(nn.Module):
    """sigmoid(receptance(xr)) * value(relu(key(xk))^2), xr/xk token-shift mixes."""

    def __init__(self, cfg: RWKVConfig):
        super().__init__()
        self.time_maa_k = param(1, 1, cfg.n_embd)
        self.time_maa_r = param(1, 1, cfg.n_embd)
        self.key = nn.Linear(cfg.n_embd, cfg.dim_ffn, bias=False)
        self.receptance = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.value = nn.Linear(cfg.dim_ffn, cfg.n_embd, bias=False)

    def forward(self, x: Tensor, shift: Tensor | None) -> tuple[Tensor, Tensor]:
        xx = token_shift(x, shift) - x
        k = torch.relu(self.key(x + xx * self.time_maa_k)).square()
        return torch.sigmoid(self.receptance(x + xx * self.time_maa_r)) * self.value(k), x[:, -1]


class Block6(Block):
    """An RWKV-6 block (v_first passes through unused)."""

    def __init__(self, cfg: RWKVConfig, layer_id: int):
        super().__init__(cfg, layer_id, TimeMix6(cfg), ChannelMix6(cfg))
