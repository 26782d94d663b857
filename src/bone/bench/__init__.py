"""`python -m bone.bench` / `bone bench`: Flash-Bone benchmarks, measured side by side in one process.

  --suite step   (default) one training step of a Llama-shaped model per method: time, bytes kept
                 for backward, peak RSS, the 7B memory table (`step.py`); `--shape small` is the
                 few-tokens probe (hidden 512, MLP 1536, 4 layers, vocab 4096, batch 2 x 256);
                 `--quant nf4|fp4|int8`: the projections of the base quantized (bitsandbytes),
                 methods frozen, QLoRA, PEFT MiSS shard/bat and bone col/shard, plus the
                 quantized weights' bytes next to bf16
  --suite keep   keep_merged's trade (`keep.py`): col and shard step time and bytes kept, with and
                 without the merged weight kept for backward, at several tokens per step (--tokens)
  --suite train  end to end (`e2e.py`): `bone train` vs transformers.Trainer + PEFT MiSS on the
                 demo config's data and settings, whole runs of --steps steps, interleaved

Parsing needs no torch (`bone bench --help` stays light); the suites import it when they run.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..errors import ConfigError
from ..options import field_comments
from .config import SHAPES, BenchConfig

SUITES = ("step", "keep", "train")
# options that only some suites read -> (those suites, the option's default): set for another suite, refused
SCOPED = {"methods": (("step",), None), "quant": (("step",), None), "rss_steps": (("step",), 2),
          "warmup": (("step", "keep"), 2), "tokens": (("keep",), "64,256,1024,4096"),
          "variants": (("train",), "col,shard"), "steps": (("train",), 12)}
SUITE_HELP = __doc__.split("\n\n")[1]  # the suites, for --help


def _parser() -> argparse.ArgumentParser:
    from ..quant.config import METHODS as QUANT
    from .setups import QUANT_METHODS, SETUPS

    p = argparse.ArgumentParser(prog="bone bench", description="Flash-Bone benchmarks, measured side by side in one process",
                                epilog=SUITE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=SUITES, default="step", help="what to measure (see below; default step)")
    p.add_argument("--shape", choices=list(SHAPES), default="default",
                   help="model shape preset for step/keep; the options below override single fields")
    notes = field_comments(BenchConfig)
    for f in dataclasses.fields(BenchConfig):
        small = SHAPES["small"].get(f.name, f.default)
        p.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=None,
                       help=f"{notes.get(f.name, '')} (default {f.default}" + (f"; --shape small: {small})" if small != f.default else ")"))
    p.add_argument("--methods", default=None, help="step suite: comma-separated subset of: " + ", ".join(SETUPS)
                   + " (default: all; with --quant: " + ",".join(QUANT_METHODS) + ")")
    p.add_argument("--quant", choices=list(QUANT), default=None,
                   help="step suite: quantize the base's projections with bitsandbytes (4-bit needs hidden and "
                        "intermediate divisible by 64)")
    default = {name: d for name, (_, d) in SCOPED.items()}  # the scoped options' defaults, applied by _config
    p.add_argument("--tokens", help=f"keep suite: tokens per step to measure (comma-separated; default {default['tokens']})")
    p.add_argument("--variants", help=f"train suite: Bone variants to run (col, shard; default {default['variants']})")
    p.add_argument("--steps", type=int, help=f"train suite: optimizer steps per run (default {default['steps']})")
    p.add_argument("--repeats", type=int, default=7, help="timed interleaved rounds (median reported; train suite: runs per side)")
    p.add_argument("--warmup", type=int, help=f"step and keep suites: untimed rounds first (default {default['warmup']})")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--rss-steps", type=int,
                   help=f"step suite: steps each peak-RSS subprocess runs; 0 skips RSS (default {default['rss_steps']})")
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="directory for the suite's .json / .md (and step's .png)")
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    return p


def _config(args) -> BenchConfig:
    """The model shape: the --shape preset with single --field options on top, checked; the
    suite-only options (`SCOPED`) refused for another suite, else given their defaults."""
    for name, (suites, default) in SCOPED.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
        elif args.suite not in suites:
            raise ConfigError(f"--{name.replace('_', '-')} applies to --suite {' / '.join(suites)}, not {args.suite}")
    for name, low in (("repeats", 1), ("warmup", 0), ("threads", 1), ("rss_steps", 0), ("steps", 1)):
        if getattr(args, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a directory; name a folder")
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(BenchConfig) if getattr(args, f.name) is not None}
    cfg = BenchConfig(**{**SHAPES[args.shape], **given})
    cfg.check()
    if args.quant is not None:
        from .quant import check

        check(cfg, args.quant)
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suite; bad arguments raise ConfigError (MissingDependencyError without PEFT)
    before anything is built or written."""
    args = _parser().parse_args(argv)
    cfg = _config(args)
    import torch

    torch.set_num_threads(args.threads)
    if args.suite == "keep":
        from . import keep

        return keep.main(args, cfg)
    if args.suite == "train":
        from . import e2e

        return e2e.main(args)
    from . import step

    return step.main(args, cfg)
