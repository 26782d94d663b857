"""What every command's parser shares. Command modules import torch only when they run, so
`bone <command> --help` and argument errors stay fast."""
from __future__ import annotations

import argparse
import dataclasses
import difflib

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


def config_and_overrides(p: argparse.ArgumentParser, argv: list[str], config_cls) -> argparse.Namespace:
    """`p`'s options from argv, plus `config` (the first bare argument, CONFIG.yaml, or None) and
    `overrides` (the rest: key=value and --section.key VALUE, read by `bone.options`). A `--name`
    that starts no key of `config_cls` but resembles one of p's own options is a usage error naming
    that option (--overwrit is a typo of --overwrite, not an unknown config key)."""
    args, rest = p.parse_known_args(argv)
    keys = {f.name for f in dataclasses.fields(config_cls)}
    options = [s for action in p._actions for s in action.option_strings if s.startswith("--") and s != "--help"]
    for a in rest:
        name = a.split("=", 1)[0]
        if name.startswith("--") and name[2:].replace("-", "_").split(".")[0] not in keys:
            near = difflib.get_close_matches(name, options, n=1, cutoff=0.75)  # a typo, not another word
            if near:
                p.error(f"unrecognized argument {name}; did you mean {near[0]}?")
    args.config = rest.pop(0) if rest and not rest[0].startswith("-") and "=" not in rest[0] else None
    args.overrides = rest
    return args
