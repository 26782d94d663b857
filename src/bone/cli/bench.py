"""`bone bench`: the Flash-Bone vs PEFT benchmark; its options are bone.bench's (`bone bench --help`)."""
from __future__ import annotations

import argparse

ABOUT = "Flash-Bone vs PEFT training-step benchmark"
USAGE = "bone bench [...]"
OOM_HINT = "Try smaller benchmark shapes (see bone bench --help)"


def parse(argv: list[str]) -> argparse.Namespace:
    """Everything goes to bone.bench's own parser, except the global --traceback."""
    return argparse.Namespace(argv=[a for a in argv if a != "--traceback"], traceback="--traceback" in argv)


def run(args: argparse.Namespace) -> int:
    from ..bench import main

    try:
        return main(args.argv) or 0
    except SystemExit as done:  # its argparse: --help, or a usage error it has printed
        return done.code
