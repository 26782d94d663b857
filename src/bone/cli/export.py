"""`bone export --to TARGET`: write a trained adapter out for another tool (`bone.export.TARGETS`).

Each target adds its own options (`ExportTarget.add_arguments`); `bone export --to NAME --help`
lists them. `bone merge` is the familiar spelling of `bone export --to merged`.
"""
from __future__ import annotations

import argparse

from .common import new_parser

ABOUT = "write an adapter for another tool (targets: bone export --help)"
USAGE = "bone export --to TARGET --adapter DIR --out OUT"
OOM_HINT = "The export loads the base model: try --no-check where the target has it, or a machine with more memory"


def add_common(p: argparse.ArgumentParser, *, base_required: bool) -> None:
    p.add_argument("--adapter", required=True, help="adapter folder (bone train's <output_dir>/adapter) or RWKV-PEFT .pth checkpoint")
    p.add_argument("--out", required=True, help="what to write (a new folder or file, depending on the target)")
    p.add_argument("--base", required=base_required,
                   help="the base model the adapter was trained on: HF folder, RWKV .pth, or smollm2-135m")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (never an input)")


def parser(target=None) -> argparse.ArgumentParser:
    from ..export import TARGETS

    listing = "\n".join(f"  {t.name:<10} {t.about}" + ("  (needs --base)" if t.needs_base else "") for t in TARGETS.values())
    p = new_parser("bone export", description="Write a trained adapter out for another tool, in the format of the target --to.",
                   epilog=f"targets:\n{listing}\n\n`bone export --to NAME --help` shows the options of target NAME.")
    p.add_argument("--to", required=True, choices=list(TARGETS), help="the export target")
    add_common(p, base_required=False)
    if target is not None:
        target.add_arguments(p.add_argument_group(f"options of --to {target.name}"))
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    from ..export import TARGETS

    first = argparse.ArgumentParser(prog="bone export", add_help=False, allow_abbrev=False)
    first.add_argument("--to", choices=list(TARGETS))
    to = first.parse_known_args(argv)[0].to  # the target decides which options follow
    p = parser(TARGETS[to] if to else None)
    args = p.parse_args(argv)
    if TARGETS[args.to].needs_base and args.base is None:
        p.error(f"--to {args.to} needs --base (the base model the adapter was trained on)")
    return args


def write(target, args: argparse.Namespace) -> int:
    """Run `target` on the parsed arguments; refuses adapters the target cannot write before any work."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..io import is_adapter, read

    adapter = Path(args.adapter)
    if is_adapter(adapter):  # anything else: the target says what is wrong with it
        why = target.check(read(adapter).cfg)
        if why is not None:
            raise ConfigError(why)
    target.export(adapter, Path(args.out), base=Path(args.base) if args.base else None, options=args,
                  overwrite=args.overwrite, log=print)
    return 0


def run(args: argparse.Namespace) -> int:
    from ..export import TARGETS

    return write(TARGETS[args.to], args)
