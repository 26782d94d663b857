"""Memory kept for backward by the adapted projections of a Llama model, computed from shapes.

Per decoder layer the seven projections are q, k, v, o `(h, h)`, gate, up `(i, h)`, down `(h, i)`.
Inputs shared by several projections are one tensor (q/k/v read the same normed hidden state,
gate/up the same one), and o's input is the attention output, which SDPA keeps for its own
backward in the frozen model too, so adapting a layer keeps 2 h + i more input features per
token. What each method keeps for backward, beyond what the frozen model keeps anyway (read off
the code; tests/bench checks every row against saved-tensor hooks on a small model):

  PEFT col (MiSS bat)  per projection the cloned W (saved by `W @ B`) and the merged W' (saved by
                       F.linear), plus the layer inputs (for dW')
  Flash-Bone col/row   the layer inputs only (dB needs x); W' is rebuilt in backward
  PEFT / Flash shard   the summed input slices `(T, r)` per projection
  LoRA r               the layer inputs plus the `(T, r)` LoRA-A output per projection
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass
class ScaleSpec:
    hidden: int = 4096  # LLaMA2-7B hidden size
    intermediate: int = 11008  # LLaMA2-7B MLP width
    layers: int = 32  # decoder layers
    r: int = 64  # Bone block size / LoRA rank
    bytes_per: int = 2  # bf16 activations, weights and adapter
    tokens: int = 64 * 512  # batch 64 x sequence 512


def _shapes(s: ScaleSpec) -> list[tuple[int, int]]:
    h, i = s.hidden, s.intermediate
    return [(h, h)] * 4 + [(i, h), (i, h), (h, i)]


def kept_per_layer(s: ScaleSpec) -> dict[str, dict[str, int]]:
    """Bytes kept for backward per decoder layer, split by kind, for each method."""
    weights = sum(o * n for o, n in _shapes(s)) * s.bytes_per
    inputs = (2 * s.hidden + s.intermediate) * s.tokens * s.bytes_per  # q/k/v's, gate/up's, down's
    slices = len(_shapes(s)) * s.tokens * s.r * s.bytes_per
    return {
        "PEFT col (MiSS bat)": {"weight-sized": 2 * weights, "layer inputs": inputs, "T x r": 0},
        "Flash-Bone col": {"weight-sized": 0, "layer inputs": inputs, "T x r": 0},
        "Flash-Bone row": {"weight-sized": 0, "layer inputs": inputs, "T x r": 0},
        "PEFT shard (MiSS)": {"weight-sized": 0, "layer inputs": 0, "T x r": slices},
        "Flash-Bone shard": {"weight-sized": 0, "layer inputs": 0, "T x r": slices},
        f"PEFT LoRA r={s.r}": {"weight-sized": 0, "layer inputs": inputs, "T x r": slices},
    }


def scale_table(s: ScaleSpec = ScaleSpec()) -> str:
    """Markdown table: GiB kept for backward, whole model and per layer (as with checkpointing)."""
    rows = [f"Memory kept for backward by the adapted projections: {s.layers} layers, hidden {s.hidden}, "
            f"intermediate {s.intermediate}, all seven projections, r={s.r}, {8 * s.bytes_per}-bit, "
            f"{s.tokens} tokens per step",
            "",
            "| method | weight-sized (GiB) | layer inputs (GiB) | T x r (GiB) | total, no checkpointing (GiB) | per layer (GiB) |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, parts in kept_per_layer(s).items():
        layer = sum(parts.values())
        rows.append(f"| {name} | {parts['weight-sized'] * s.layers / GIB:.1f} | {parts['layer inputs'] * s.layers / GIB:.1f} "
                    f"| {parts['T x r'] * s.layers / GIB:.2f} | {layer * s.layers / GIB:.1f} | {layer / GIB:.2f} |")
    return "\n".join(rows)
