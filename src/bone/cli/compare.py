"""`bone compare`: a fair grid of Bone variants and baselines (methods x learning rates x seeds) and its report."""
from __future__ import annotations

import argparse

from .common import config_and_overrides, new_parser

ABOUT = "Bone vs LoRA / PiSSA / DoRA / full on your model and data, fairly"
USAGE = "bone compare CONFIG.yaml [--quick] [key=value ...]"
OOM_HINT = ("Try a smaller train.schedule.batch_size with a larger train.schedule.grad_accum (same global batch), "
            "train.model.gradient_checkpointing=true, or a smaller train.eval.batch_size")
DESCRIPTION = """\
Run a grid of arms (Bone variants col / row / shard / mini, baselines lora / pissa / dora / full)
x learning rates x seeds, each an ordinary `bone train` run in OUT/<arm>/lr-<lr>/seed-<s>/, all
with the same data, data order, token budget and recipe. Each arm's learning rate is picked on a
validation split; the report (OUT/compare.md, compare.json, compare.png) gives test accuracy over
seeds, the paired difference to the reference arm with a bootstrap interval, final training loss,
trainable parameters, seconds per step and peak memory. Rerunning the same command skips finished
runs and resumes an interrupted one from its newest checkpoint."""


def parser() -> argparse.ArgumentParser:
    from ..compare.config import CompareConfig
    from ..options import render_yaml

    p = new_parser("bone compare", description=DESCRIPTION,
                   usage="bone compare CONFIG.yaml [--quick] [key=value ...] [--key VALUE ...] [--plan] [--print-config]",
                   epilog="Every option (CONFIG.yaml key or override), its type, default and meaning:\n\n"
                          + render_yaml(CompareConfig))
    p.add_argument("--quick", action="store_true", help="apply the config's `quick:` overrides first (a first look in minutes)")
    p.add_argument("--plan", action="store_true", help="run every check and list the runs (finished, to resume, new) without training")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as commented YAML and exit")
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    from ..compare.config import CompareConfig

    return config_and_overrides(parser(), argv, CompareConfig)


def _plan_lines(plan) -> list[str]:
    from ..compare.config import lr_name
    from ..compare.grid import status

    lines = [f"{arm}: {plan.labels[arm]}, {plan.counts[arm]:,} trainable parameters" for arm in plan.cfg.methods]
    for cell in plan.cells:
        lines.append(f"  {cell.arm} lr {lr_name(cell.lr)} seed {cell.seed}: "
                     f"{status(cell.folder, plan.cfg.needs_validation)} ({cell.folder})")
    return lines


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from ..compare import load_compare_config
    from ..errors import UsageError, require
    from ..options import render_yaml

    if args.config is None:
        raise UsageError("bone compare needs a config file: bone compare CONFIG.yaml (e.g. configs/compare-demo.yaml)")
    cfg = load_compare_config(args.config, args.overrides, quick=args.quick)
    if args.print_config:
        print(render_yaml(cfg))
        return 0
    require("accelerate", 'pip install "bone[train]"', "bone compare")
    require("matplotlib", 'pip install "bone[train]"', "bone compare (compare.png)")
    from ..compare import run as run_compare
    from ..compare.plan import make_plan

    if args.plan:
        print("\n".join(_plan_lines(make_plan(cfg))))
        return 0
    command = shlex.join(["bone", "compare", args.config, *(["--quick"] if args.quick else []), *args.overrides])
    try:
        return run_compare(cfg, command)
    except KeyboardInterrupt:
        print("bone compare: interrupted; rerun the same command to continue (finished runs are kept, an interrupted "
              "one resumes from its newest checkpoint)", file=sys.stderr)
        return 130
