"""CompareConfig: every option of `bone compare`, one typed field each (the field comments are its --help).

A comparison is a grid of arms x learning rates x seeds. An arm is a Bone variant (col, row,
shard, mini: `method: bone` with that variant) or a baseline method (lora, pissa, dora, full).
Every cell is an ordinary `bone train` run of the shared `train:` recipe, with only the method,
the learning rate, the seed, the output folder and the held-out data (the validation split)
set per cell (`run_config`). Importing this module does not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import options
from ..errors import ConfigError
from ..train.config import TrainConfig

BASELINES = ("lora", "pissa", "dora", "full")  # arms that are methods of their own (bone.methods)


def variants() -> list[str]:
    """The Bone variants (each an arm of `method: bone`); read when needed (bone.variants imports torch)."""
    from ..variants import VARIANTS

    return list(VARIANTS)


def arms() -> list[str]:
    """Every arm name: the Bone variants, then the baselines."""
    return [*variants(), *BASELINES]


def lr_name(lr: float) -> str:
    """How a learning rate is spelled in folder names and reports: 0.0003, 1e-05."""
    return f"{lr:g}"


@dataclass
class ValidationSection:
    source: str | None = None  # held-out data the learning rate is picked on; None = the training source's `split` (bundled or Hub data)
    split: str = "validation"  # split of `source` to read (bundled and Hub data)
    limit: int | None = 200  # the first N records (None = all)


@dataclass
class TestSection:
    source: str | None = None  # held-out data the report is made on; None = the training source's `split` (bundled or Hub data)
    split: str = "test"  # split of `source` to read (bundled and Hub data)
    limit: int | None = 300  # the first N records (None = all); ~300 gives a 95% interval of about +-0.05 on an accuracy
    base: bool = True  # also evaluate the base model, untrained, on these records


def _default_lrs() -> dict[str, list[float]]:
    return {"col": [1e-4, 3e-4], "row": [1e-4, 3e-4], "shard": [3e-4, 1e-3], "mini": [3e-4, 1e-3],
            "lora": [3e-4, 1e-3], "pissa": [1e-4, 3e-4], "dora": [3e-4, 1e-3], "full": [1e-5, 3e-5]}


@dataclass
class CompareConfig:
    output_dir: str = "runs/compare"  # the grid folder: <arm>/lr-<lr>/seed-<s>/ run folders, compare.md, compare.json, compare.png
    methods: list[str] = field(default_factory=lambda: ["col", "shard", "lora", "pissa"])  # the arms, in report order: Bone variants (col, row, shard, mini) and baselines (lora, pissa, dora, full)
    reference: str = "col"  # the arm every other arm is compared with, item by item on the test split
    lrs: dict[str, list[float]] = field(default_factory=_default_lrs)  # learning rates tried per arm (lrs.col=[1e-4,3e-4]); each arm's own is picked on the validation split
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # training seeds (data order, initialisation, dropout); every arm runs every seed
    param_tolerance: float = 0.1  # an arm whose trainable parameter count differs from the reference's by more than this fraction is refused
    allow_unmatched: list[str] = field(default_factory=list)  # arms to run although their trainable count is not matched to the reference's (e.g. full)
    keep_checkpoints: bool = False  # keep the checkpoints of finished runs (large); adapters, metrics and results are always kept
    bootstrap: int = 10000  # bootstrap resamples behind every confidence interval
    confidence: float = 0.95  # level of the confidence intervals
    stats_seed: int = 0  # seed of the bootstrap: the same results give the same intervals
    validation: ValidationSection = field(default_factory=ValidationSection)  # where each arm's learning rate is picked (never the test data)
    test: TestSection = field(default_factory=TestSection)  # where the report's accuracies and differences come from
    quick: list[str] = field(default_factory=list)  # the overrides --quick applies before the command line's (a first look in minutes)
    train: TrainConfig = field(default_factory=TrainConfig)  # the recipe every run shares; method, optim.lr, schedule.seed, output_dir and data.eval* are set per run

    def __post_init__(self) -> None:
        known = arms()
        if not self.methods:
            raise ConfigError(f"methods is empty: list the arms to compare, e.g. [col, shard, lora, pissa] (known: {known})")
        for name in [*self.methods, *self.lrs, *self.allow_unmatched, self.reference]:
            if name not in known:
                raise ConfigError(f"unknown method {name!r} in the compare config; the arms are {known}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods lists an arm twice: {self.methods}")
        if self.reference not in self.methods:
            raise ConfigError(f"reference={self.reference!r} is not one of methods {self.methods}: add it, or pick one of them")
        for arm in self.methods:
            self._check_lrs(arm)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ConfigError(f"seeds must be distinct non-negative ints, at least one, got {self.seeds}")
        if self.param_tolerance < 0:
            raise ConfigError(f"param_tolerance must be >= 0, got {self.param_tolerance}")
        if self.bootstrap < 100 or not 0.5 <= self.confidence < 1:
            raise ConfigError(f"bootstrap must be >= 100 and confidence in [0.5, 1), got {self.bootstrap}, {self.confidence}")
        for section in (self.validation, self.test):
            if section.limit is not None and section.limit < 1:
                raise ConfigError(f"validation.limit and test.limit must be >= 1 or null, got {section.limit}")
        if self.train.eval.metric != "accuracy":
            raise ConfigError(f"bone compare compares accuracies item by item: set train.eval.metric=accuracy "
                              f"(got {self.train.eval.metric!r})")
        if self.needs_validation and self.heldout(self.validation) == self.heldout(self.test):
            raise ConfigError(f"validation and test read the same data ({self.heldout(self.test)}): the learning rate "
                              f"must be picked on other records than the reported ones; set validation.source or .split")

    def _check_lrs(self, arm: str) -> None:
        lrs = self.lrs.get(arm)
        if lrs is None:
            raise ConfigError(f"no learning rates for {arm!r}: set lrs.{arm}=[...] (one or more)")
        if not lrs:
            raise ConfigError(f"lrs.{arm} is empty: give at least one learning rate, e.g. lrs.{arm}=[1e-4,3e-4]")
        if min(lrs) <= 0:
            raise ConfigError(f"lrs.{arm} must hold positive learning rates, got {lrs}")
        if len({lr_name(lr) for lr in lrs}) != len(lrs):
            raise ConfigError(f"lrs.{arm} lists a learning rate twice: {lrs}")

    @property
    def needs_validation(self) -> bool:
        """Whether some arm has learning rates to choose from (with one each, nothing is picked)."""
        return any(len(self.lrs[arm]) > 1 for arm in self.methods)

    def heldout(self, section) -> tuple[str, str]:
        """(source, split) that a held-out section reads."""
        return (section.source or self.train.data.train, section.split)

    @property
    def root(self) -> Path:
        return Path(self.output_dir)


def method_of(arm: str) -> str:
    """The `bone train` method an arm runs."""
    return "bone" if arm in variants() else arm


def run_folder(cfg: CompareConfig, arm: str, lr: float, seed: int) -> Path:
    return cfg.root / arm / f"lr-{lr_name(lr)}" / f"seed-{seed}"


def run_config(cfg: CompareConfig, arm: str, lr: float, seed: int) -> TrainConfig:
    """The `bone train` config of one cell: the shared recipe with this arm, learning rate and seed, the
    validation data as its held-out data (evaluated after training; no held-out data when nothing is
    to be picked). Baselines keep the bone section of the reference arm (their targets and
    `lora.r: auto` follow it)."""
    t = cfg.train
    bone_arms = variants()
    variant = arm if arm in bone_arms else (cfg.reference if cfg.reference in bone_arms else t.bone.variant)
    source, split = cfg.heldout(cfg.validation) if cfg.needs_validation else (None, t.data.eval_split)
    return replace(
        t, output_dir=str(run_folder(cfg, arm, lr, seed)), method=method_of(arm),
        bone=replace(t.bone, variant=variant),
        data=replace(t.data, eval=source, eval_split=split, eval_limit=cfg.validation.limit),
        optim=replace(t.optim, lr=lr), schedule=replace(t.schedule, seed=seed),
        eval=replace(t.eval, before=False, after=cfg.needs_validation),
    )


# keys that differ per run or only change the report: a grid folder may be rerun with other values
FREE = ("output_dir", "methods", "reference", "lrs", "seeds", "param_tolerance", "allow_unmatched", "keep_checkpoints",
        "bootstrap", "confidence", "stats_seed", "quick", "train.output_dir", "train.method", "train.optim.lr",
        "train.schedule.seed", "train.data.eval", "train.data.eval_split", "train.data.eval_limit", "train.eval.before",
        "train.eval.after", "train.logging.", "train.checkpointing.", "test.base")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "lrs" else {prefix + k: v})
    return out


def differences(saved: CompareConfig, now: CompareConfig) -> list[str]:
    """'key: saved -> now' for every key that defines the grid's runs or its evaluation and differs."""
    a, b = _flat(options.to_dict(saved)), _flat(options.to_dict(now))
    keys = [k for k in dict.fromkeys([*a, *b]) if not any(k == f or (f.endswith(".") and k.startswith(f)) for f in FREE)]
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def load_compare_config(path: str | Path | None, overrides: list[str] = (), *, quick: bool = False) -> CompareConfig:
    """CompareConfig from a YAML file, then (with `quick`) its `quick` overrides, then the command line's."""
    cfg = options.load(CompareConfig, path)
    given = [*(cfg.quick if quick else []), *overrides]
    if quick and not cfg.quick:
        raise ConfigError(f"--quick: {path} has no `quick:` list of overrides (e.g. [seeds=[0], test.limit=100])")
    return options.apply_overrides(cfg, options.parse_overrides(given))
