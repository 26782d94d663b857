"""Flash-Bone: fused Bone autograd functions (being built; see issue 5).

`forward_fn(variant, chunk_size)` returns a callable with the exact signature and semantics of
`bone.variants.get(variant).forward`: `(x, w, bias, block, dropout) -> x @ W'^T + bias`.
"""
from __future__ import annotations

from .. import variants


def forward_fn(variant: str, chunk_size: int):
    return variants.get(variant).forward
