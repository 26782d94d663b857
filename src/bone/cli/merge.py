"""`bone merge`: fold an adapter into its base model; the `merged` export target under its familiar name."""
from __future__ import annotations

import argparse

from . import export
from .common import new_parser

ABOUT = "fold an adapter into its base model (HF folder or RWKV .pth)"
USAGE = "bone merge --base M --adapter DIR --out OUT"
OOM_HINT = "Merging streams one shard at a time, but the check loads the model twice: try --no-check"


def parser() -> argparse.ArgumentParser:
    from ..export import TARGETS

    p = new_parser("bone merge", description="Fold an adapter into its base model (HF folder or RWKV .pth), checked on a "
                                             "probe batch. Bone adapters stream shard by shard; LoRA / PiSSA / DoRA / full "
                                             "results (bone train method=...) load the base once. Same as "
                                             "`bone export --to merged`.")
    export.add_common(p, base_required=True)
    TARGETS["merged"].add_arguments(p)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    return parser().parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from ..export import TARGETS

    return export.write(TARGETS["merged"], args)
