"""Tiny random checkpoints written in BlinkDL's layout (independently of the model code), and a
runner for the official `rwkv` runtime in a subprocess (it reads RWKV_V7_ON at import time)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

VOCAB = 512  # the runtime reads the vocabulary size from emb.weight, so a small one is fine


def _lin(g, out: int, inp: int) -> torch.Tensor:
    return torch.randn(out, inp, generator=g) / inp**0.5


def _vec(g, C: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    return (torch.randn(1, 1, C, generator=g) * scale + shift)


def _norm(g, sd: dict, key: str, C: int) -> None:
    sd[f"{key}.weight"] = 1 + 0.1 * torch.randn(C, generator=g)
    sd[f"{key}.bias"] = 0.1 * torch.randn(C, generator=g)


def _checkpoint(g, n_layer: int, C: int, vocab: int, mixes: tuple[str, ...], layer) -> dict:
    """What both versions store: emb, per block ln0 (block 0) / ln1 / ln2 and the (1, 1, C) token-shift
    mixes `mixes` of att, then `layer(sd, prefix, i)` for the rest of the block; ln_out, head."""
    sd = {"emb.weight": torch.randn(vocab, C, generator=g)}
    for i in range(n_layer):
        p = f"blocks.{i}."
        _norm(g, sd, p + "ln1", C)
        _norm(g, sd, p + "ln2", C)
        if i == 0:
            _norm(g, sd, p + "ln0", C)
        for name in mixes:
            sd[p + "att." + name] = torch.rand(1, 1, C, generator=g)
        layer(sd, p, i)
    _norm(g, sd, "ln_out", C)
    sd["head.weight"] = _lin(g, vocab, C)
    return sd


def _low_rank(g, sd: dict, a: str, one: str, two: str, C: int, D: int) -> None:
    """A (C, D) @ (D, C) pair as the checkpoints store it (scale 0.3)."""
    sd[a + one], sd[a + two] = 0.3 * torch.randn(C, D, generator=g), 0.3 * torch.randn(D, C, generator=g)


def _linears(g, sd: dict, prefix: str, names: tuple[str, ...], C: int) -> None:
    for name in names:
        sd[prefix + name + ".weight"] = _lin(g, C, C)


def make_x070(n_layer=2, C=128, N=64, vocab=VOCAB, lora=(32, 16, 8, 24), seed=0, layer0_v=True) -> dict:
    """RWKV-7 keys and shapes as BlinkDL's RWKV-v7 train_temp model saves them."""
    g = torch.Generator().manual_seed(seed)
    H, F = C // N, 4 * C
    dw, da, dv, dg = lora

    def layer(sd, p, i):
        a = p + "att."
        _low_rank(g, sd, a, "w1", "w2", C, dw)
        sd[a + "w0"] = _vec(g, C, 1.5, -1.0)
        _low_rank(g, sd, a, "a1", "a2", C, da)
        sd[a + "a0"] = _vec(g, C, 0.5)
        if i > 0 or layer0_v:
            _low_rank(g, sd, a, "v1", "v2", C, dv)
            sd[a + "v0"] = _vec(g, C, 0.5, 0.5)
        _low_rank(g, sd, a, "g1", "g2", C, dg)
        sd[a + "k_k"] = _vec(g, C, 0.3, 0.8)
        sd[a + "k_a"] = torch.rand(1, 1, C, generator=g) + 0.5
        sd[a + "r_k"] = 0.3 * torch.randn(H, N, generator=g)
        _linears(g, sd, a, ("receptance", "key", "value", "output"), C)
        _norm(g, sd, a + "ln_x", C)
        sd[p + "ffn.x_k"] = torch.rand(1, 1, C, generator=g)
        sd[p + "ffn.key.weight"] = _lin(g, F, C)
        sd[p + "ffn.value.weight"] = _lin(g, C, F)

    return _checkpoint(g, n_layer, C, vocab, ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"), layer)


def make_x060(n_layer=2, C=128, N=64, vocab=VOCAB, mix=16, decay=24, seed=0) -> dict:
    """RWKV-6 keys and shapes as BlinkDL's RWKV-v5 (x060) train model saves them."""
    g = torch.Generator().manual_seed(seed)
    H, F = C // N, int(3.5 * C)

    def layer(sd, p, i):
        a = p + "att."
        sd[a + "time_maa_w1"] = 0.3 * torch.randn(C, 5 * mix, generator=g)
        sd[a + "time_maa_w2"] = 0.3 * torch.randn(5, mix, C, generator=g)
        sd[a + "time_decay"] = _vec(g, C, 1.5, -1.5)  # some channels decay hard (exp(-exp(2)) per step)
        _low_rank(g, sd, a, "time_decay_w1", "time_decay_w2", C, decay)
        sd[a + "time_faaaa"] = 0.5 * torch.randn(H, N, generator=g)
        _linears(g, sd, a, ("receptance", "key", "value", "output", "gate"), C)
        _norm(g, sd, a + "ln_x", C)
        sd[p + "ffn.time_maa_k"] = torch.rand(1, 1, C, generator=g)
        sd[p + "ffn.time_maa_r"] = torch.rand(1, 1, C, generator=g)
        sd[p + "ffn.key.weight"] = _lin(g, F, C)
        sd[p + "ffn.receptance.weight"] = _lin(g, C, C)
        sd[p + "ffn.value.weight"] = _lin(g, C, F)

    mixes = ("time_maa_x", "time_maa_w", "time_maa_k", "time_maa_v", "time_maa_r", "time_maa_g")
    return _checkpoint(g, n_layer, C, vocab, mixes, layer)


MAKERS = {"x070": make_x070, "x060": make_x060}

_RUNNER = textwrap.dedent(
    """
    import sys, torch
    from rwkv.model import RWKV
    pth, tokens, out = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], sys.argv[3]
    model = RWKV(model=pth[: -len(".pth")], strategy="cpu fp32", verbose=False) if "{v}" == "x060" else \\
        RWKV(model=pth[: -len(".pth")], strategy="cpu fp32")
    logits, _ = model.forward(tokens, None, full_output=True)
    torch.save(logits.float().contiguous(), out)
    """
)


def official_logits(pth: Path, tokens: list[int], version: str) -> torch.Tensor:
    """(T, vocab) fp32 logits of the official rwkv runtime (strategy "cpu fp32") on `tokens`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_")}
    env.update(OMP_NUM_THREADS="1", RWKV_CUDA_ON="0")
    if version == "x070":
        env["RWKV_V7_ON"] = "1"
    out = pth.with_suffix(".logits.pt")
    cmd = [sys.executable, "-c", _RUNNER.replace("{v}", version), str(pth), ",".join(map(str, tokens)), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"official runtime failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return torch.load(out, weights_only=True)
