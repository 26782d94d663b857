"""What `bone compare` checks before any run, and the grid of cells it then runs.

Every bad input is one line before anything heavy happens (no model weights are read: parameter
counts come from the model's shapes, `bone.models.load_shapes`): a missing package (PEFT for
the baselines), a grid folder written by a different config, held-out data that is missing, shared
between validation and test, or a file without splits, and an arm whose trainable parameter count
is not matched to the reference arm's (unless `allow_unmatched` names it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import methods
from ..data import load_records, to_examples
from ..data.sources import FORMATS
from ..errors import ConfigError, OutputExistsError
from ..options import load
from ..train.config import TrainConfig
from .config import CompareConfig, differences, method_of, run_config

GRID_CONFIG = "compare.yaml"  # the config a grid folder was written by


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    arm: str
    lr: float
    seed: int
    config: TrainConfig

    @property
    def folder(self) -> Path:
        return Path(self.config.output_dir)


@dataclass
class Plan:
    cfg: CompareConfig
    cells: list[Cell]
    counts: dict[str, int]  # arm -> trainable parameters
    labels: dict[str, str]  # arm -> method label, automatic choices resolved
    data: dict  # sizes of the splits and their overlaps (reported)
    test_records: list[dict]


def make_plan(cfg: CompareConfig) -> Plan:
    """Check everything (see the module docstring); returns the plan, or raises a BoneError."""
    for arm in cfg.methods:
        methods.get(method_of(arm)).require()
    check_folder(cfg)
    data, test_records = check_heldout(cfg)
    counts, labels = check_counts(cfg)
    cells = [Cell(arm, lr, seed, run_config(cfg, arm, lr, seed))
             for seed in cfg.seeds for arm in cfg.methods for lr in cfg.lrs[arm]]
    return Plan(cfg, cells, counts, labels, data, test_records)


def check_folder(cfg: CompareConfig) -> None:
    """The output folder is new, empty, or a grid written by a config that defines the same runs."""
    root, saved = cfg.root, cfg.root / GRID_CONFIG
    if saved.is_file():
        diff = differences(load(CompareConfig, saved), cfg)
        if diff:
            raise ConfigError(f"{root} holds a grid written by a different config ({'; '.join(diff)}): rerun it with "
                              f"the config saved in {saved}, or pick a new output_dir=...")
    elif root.exists() and any(root.iterdir()):
        raise OutputExistsError(f"output_dir {str(root)!r} exists and is not a bone compare folder (no {GRID_CONFIG}): "
                                f"pick a new output_dir=...")


def _is_file_source(source: str) -> bool:
    path = Path(source).expanduser()
    return path.exists() or path.suffix.lower() in FORMATS


def _prompts(cfg: CompareConfig, records: list[dict], source: str, held_out: bool = True) -> set[str]:
    examples = to_examples(records, source=source, **cfg.train.data.fields(held_out))
    return {ex.prompt if ex.messages is None else repr(ex.messages[:-1]) for ex in examples}


def _heldout_records(cfg: CompareConfig, name: str, section) -> list[dict]:
    if section.source is None and _is_file_source(cfg.train.data.train):
        raise ConfigError(f"{name} data missing: the training data {cfg.train.data.train} is a file, which has no "
                          f"{section.split!r} split; set {name}.source=FILE (held-out records, not training ones)")
    source, split = cfg.heldout(section)
    return load_records(source, split=split, limit=section.limit)


def check_heldout(cfg: CompareConfig) -> tuple[dict, list[dict]]:
    """Load the validation (when a learning rate is to be picked) and test records; refuse overlaps
    between them. Returns (sizes and overlaps with the training data, test records)."""
    d = cfg.train.data
    validation = (_prompts(cfg, _heldout_records(cfg, "validation", cfg.validation), "validation data")
                  if cfg.needs_validation else None)
    test_records = _heldout_records(cfg, "test", cfg.test)
    test = _prompts(cfg, test_records, "test data")
    train = _prompts(cfg, load_records(d.train, split=d.train_split, limit=d.train_limit), f"train.data.train {d.train}",
                     held_out=False)
    data = {"train": len(train), "test": len(test_records), "test_in_train": len(test & train),
            "test_source": "{} ({})".format(*cfg.heldout(cfg.test))}
    if validation is not None:
        shared = validation & test
        if shared:
            raise ConfigError(f"the validation and test data share {len(shared)} prompt(s), e.g. {sorted(shared)[0][:60]!r}: "
                              f"the learning rate must be picked on other records than the reported ones")
        data.update(validation=len(validation), validation_in_train=len(validation & train),
                    validation_source="{} ({})".format(*cfg.heldout(cfg.validation)))
    return data, test_records


def check_counts(cfg: CompareConfig) -> tuple[dict[str, int], dict[str, str]]:
    """Trainable parameters and labels of every arm, from the model's shapes; refuses an arm whose
    count is off the reference's by more than param_tolerance unless allow_unmatched names it."""
    from ..models import load_shapes

    model = load_shapes(cfg.train.model.path)
    counts, labels = {}, {}
    for arm in cfg.methods:
        method, run = methods.get(method_of(arm)), run_config(cfg, arm, cfg.lrs[arm][0], cfg.seeds[0])
        counts[arm], labels[arm] = method.count(model, run), method.label(run, model)
    ref = counts[cfg.reference]
    for arm, n in counts.items():
        off = (n - ref) / ref
        if abs(off) > cfg.param_tolerance and arm not in cfg.allow_unmatched:
            raise ConfigError(
                f"{arm} ({labels[arm]}) trains {n:,} parameters, {off:+.1%} from the reference {cfg.reference} "
                f"({labels[cfg.reference]}: {ref:,}), beyond param_tolerance={cfg.param_tolerance}: its count cannot be "
                f"matched (for LoRA-type arms set train.lora.r=auto); to run it anyway add it to allow_unmatched=[{arm}]")
    return counts, labels
