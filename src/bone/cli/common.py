"""What every command's parser shares. Command modules import torch only when they run, so
`bone <command> --help` and argument errors stay fast."""
from __future__ import annotations

import argparse

TRACEBACK_HELP = "on an error, also print its full traceback (user errors are otherwise one line)"


def new_parser(prog: str, **kwargs) -> argparse.ArgumentParser:
    """An argument parser for one command, with the global --traceback (also accepted after the command)."""
    p = argparse.ArgumentParser(prog=prog, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                                **kwargs)
    p.add_argument("--traceback", action="store_true", help=TRACEBACK_HELP)
    return p


def at_least(low: int):
    """An argparse type: an int >= `low` (anything else is a usage error naming the option)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse
