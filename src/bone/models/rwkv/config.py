"""RWKVConfig: the sizes of an RWKV-7 ("x070") or RWKV-6 ("x060") model, as read from a checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...errors import ModelError

MODEL_TYPES = ("rwkv7", "rwkv6")


@dataclass
class RWKVConfig:
    model_type: str  # "rwkv7" (BlinkDL x070, RWKV-7 "Goose") or "rwkv6" (x060, RWKV-6 "Finch")
    n_layer: int  # number of blocks
    n_embd: int  # model width C (also the attention width in every BlinkDL checkpoint)
    head_size: int  # N, channels per WKV head; n_head = n_embd // head_size
    vocab_size: int  # rows of emb.weight and head.weight (65536 for the World tokenizer)
    dim_ffn: int  # hidden width of the channel-mix (ffn.key) layer
    decay_lora: int  # x070: columns of att.w1; x060: columns of att.time_decay_w1
    aaa_lora: int = 0  # x070 only: columns of att.a1 (in-context learning rate)
    mv_lora: int = 0  # x070 only: columns of att.v1 (value residual)
    gate_lora: int = 0  # x070 only: columns of att.g1 (output gate)
    mix_lora: int = 0  # x060 only: columns of att.time_maa_w1 divided by 5 (token-shift mix)
    layer0_v_params: bool = True  # x070: whether block 0 stores v0/v1/v2 (present in BlinkDL files, unused)
    chunk_size: int = 16  # WKV chunk length of the parallel (training) form; 16 is fastest on CPU (benchmarks/bench_wkv.py)

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ModelError(f"RWKVConfig.model_type={self.model_type!r} is not one of {MODEL_TYPES}")
        for name in ("n_layer", "n_embd", "head_size", "vocab_size", "dim_ffn", "decay_lora", "chunk_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ModelError(f"RWKVConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.head_size:
            raise ModelError(f"n_embd={self.n_embd} is not a multiple of head_size={self.head_size}")
        needed = ("aaa_lora", "mv_lora", "gate_lora") if self.model_type == "rwkv7" else ("mix_lora",)
        for name in needed:
            if getattr(self, name) <= 0:
                raise ModelError(f"{self.model_type} needs RWKVConfig.{name} > 0, got {getattr(self, name)!r}")

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @property
    def version(self) -> str:
        """BlinkDL's architecture tag: "x070" or "x060"."""
        return {"rwkv7": "x070", "rwkv6": "x060"}[self.model_type]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
