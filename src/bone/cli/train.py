"""`bone train`: fine-tune from a YAML config plus overrides (the Accelerate recipe is bone.train)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import at_least, config_and_overrides, new_parser

ABOUT = "fine-tune with a Bone adapter (resumable, multi-GPU)"
USAGE = "bone train CONFIG.yaml [section.key=value ...]"
OOM_HINT = ("Try, in order: a smaller schedule.batch_size with a larger schedule.grad_accum (same global batch), "
            "model.gradient_checkpointing=true, schedule.precision=bf16 and model.dtype=bfloat16, a shorter "
            "data.max_length, a smaller bone.r, or fewer bone.target_modules")
DESCRIPTION = """\
Fine-tune a causal LM with a Bone adapter. Options come from CONFIG.yaml, then overrides
(dotted keys, e.g. optim.lr=1e-4 or --bone.r 16). Also runs under
`accelerate launch -m bone train ...` and `torchrun --nproc-per-node N -m bone train ...`."""


def parser() -> argparse.ArgumentParser:
    from ..options import render_yaml
    from ..train.config import TrainConfig

    p = new_parser("bone train", description=DESCRIPTION,
                   usage="bone train [CONFIG.yaml] [section.key=value ...] [--section.key VALUE ...]\n"
                         "                  [--resume [RUN_OR_CHECKPOINT_DIR]] [--overwrite] [--stop-at STEP] [--print-config]",
                   epilog="Every option (CONFIG.yaml key or override), its type, default and meaning:\n\n"
                          + render_yaml(TrainConfig))
    p.add_argument("--resume", nargs="?", const="latest", metavar="DIR",
                   help="continue from the newest checkpoint of output_dir (or of DIR: a run folder or a "
                        "checkpoints/step-N folder); without CONFIG, the checkpoint's config is used")
    p.add_argument("--overwrite", action="store_true", help="delete an existing output_dir (a previous bone run) and start afresh")
    p.add_argument("--stop-at", type=at_least(1), metavar="STEP", help="stop after optimizer step STEP with a checkpoint (as SIGINT/SIGTERM do)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as commented YAML and exit")
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """bone train's own options; what is left is CONFIG.yaml (first, optional) and the overrides,
    which the config loader reads (`bone.options.parse_overrides`)."""
    from ..train.config import TrainConfig

    p = parser()
    args = config_and_overrides(p, argv, TrainConfig)
    if args.config is None and not args.overrides and args.resume is None and not args.print_config:
        p.error("needs CONFIG.yaml (e.g. configs/demo.yaml) or section.key=value overrides "
                "(--print-config shows every default)")
    if args.resume not in (None, "latest") and not Path(args.resume).is_dir():
        if "=" in args.resume:  # `--resume key=value`: a bare --resume, then an override
            args.overrides.insert(0, args.resume)
            args.resume = "latest"
        elif args.config is None and Path(args.resume).is_file():  # `--resume CONFIG.yaml`
            args.config, args.resume = args.resume, "latest"
    return args


def run(args: argparse.Namespace) -> int:
    from ..errors import MissingPathError, require
    from ..options import render_yaml
    from ..train.config import load_config
    from ..train.rundir import RunDir

    config = args.config
    if args.resume not in (None, "latest"):
        if not Path(args.resume).is_dir():
            raise MissingPathError(f"--resume {args.resume} is not a folder: pass a run folder (an output_dir) or one "
                                   f"of its checkpoints/step-N folders")
        if config is None:
            config = RunDir.find_config(args.resume)
    cfg = load_config(config, args.overrides)
    if args.print_config:
        print(render_yaml(cfg))
        return 0
    require("accelerate", 'pip install "bone[train]"', "bone train")
    from ..train.launch import leave_gloo
    from ..train.trainer import Trainer

    trainer = Trainer(cfg, resume=args.resume, overwrite=args.overwrite).setup()
    try:
        code = trainer.run(stop_at=args.stop_at)
    except Exception as err:
        if trainer.is_main or not getattr(err, "raised_everywhere", False):
            raise
        return 1  # every process stopped on this error (a non-finite step, a failed write): the main process reports it
    leave_gloo(trainer.acc, code)  # returns unless this is one of several CPU (gloo) processes
    return code
