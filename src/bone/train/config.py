"""TrainConfig: every option of `bone train`, one typed field each, grouped in sections.

YAML files and command-line overrides are read and validated by `bone.options` (`load_config`);
the comment after each field is its documentation (`bone train --help` prints it). Importing this
module does not import torch; building a TrainConfig checks `method` against `bone.methods`, which does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import options
from ..config import BoneConfig
from ..data.templates import TEMPLATES
from ..errors import ConfigError
from ..eval import METRICS

PRECISIONS = ("fp32", "bf16")
SCHEDULERS = ("cosine", "linear", "constant")
MODEL_DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelSection:
    path: str = "smollm2-135m"  # Hugging Face model folder, RWKV .pth file, embedded "smollm2-135m", or Hub name (online only)
    dtype: str = "float32"  # dtype the frozen base weights are loaded in: float32, bfloat16 or float16
    tokenizer: str | None = None  # tokenizer folder or name; None = the model's own
    gradient_checkpointing: bool = False  # recompute activations in backward (non-reentrant): less memory, ~30% slower

    def __post_init__(self) -> None:
        if self.dtype not in MODEL_DTYPES:
            raise ConfigError(f"model.dtype={self.dtype!r}: use one of {MODEL_DTYPES}")


@dataclass
class LoraSection:
    r: int | str = "auto"  # LoRA rank, or "auto": the rank whose trainable count is closest to the bone section's on the same model
    alpha: float | None = None  # scale = alpha / r; None = alpha equal to the rank (scale 1)
    dropout: float = 0.0  # dropout on the LoRA input path (PEFT lora_dropout)
    target_modules: list[str] | str | None = None  # same forms as bone.target_modules; None = the bone section's targets

    def __post_init__(self) -> None:
        if isinstance(self.r, str) and self.r != "auto":
            raise ConfigError(f"lora.r must be a positive int or \"auto\", got {self.r!r}")
        if isinstance(self.r, int) and self.r < 1:
            raise ConfigError(f"lora.r must be >= 1 (or \"auto\"), got {self.r}")
        if self.alpha is not None and self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be > 0 or null, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class DataSection:
    train: str = "bundled:arith"  # training data: .jsonl/.json/.csv/.parquet file, "bundled:arith", or Hub dataset name
    train_split: str = "train"  # split of `train` to read (bundled and Hub data)
    train_limit: int | None = None  # use only the first N training records (None = all)
    eval: str | None = None  # held-out data for evaluation (None = no evaluation)
    eval_split: str = "test"  # split of `eval` to read
    eval_limit: int | None = 200  # evaluate on the first N held-out records (None = all)
    prompt_field: str | None = None  # record field holding the prompt (None = auto: query/question/instruction/prompt)
    response_field: str | None = None  # record field holding the answer (None = auto: response/answer/output)
    messages_field: str | None = None  # record field holding chat messages (use instead of prompt/response)
    template: str = "alpaca"  # prompt template: "alpaca" (the seed's) or "chat" (the tokenizer's chat template)
    max_length: int = 512  # tokens per example; longer ones are truncated (counted and reported)
    packing: bool = False  # pack several examples into each max_length row

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ConfigError(f"data.template={self.template!r}: use one of {TEMPLATES}")
        if self.max_length < 2:
            raise ConfigError(f"data.max_length must be >= 2, got {self.max_length}")


@dataclass
class OptimSection:
    lr: float = 2e-5  # peak learning rate of AdamW (only adapter parameters are trained)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.999  # AdamW second-moment decay
    eps: float = 1e-8  # AdamW epsilon
    max_grad_norm: float | None = 1.0  # clip the global gradient norm to this value (None = no clipping)

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")


@dataclass
class ScheduleSection:
    epochs: int = 1  # passes over the training data
    max_steps: int | None = None  # stop after this many optimizer steps (None = run all epochs)
    batch_size: int = 4  # examples per micro-batch on each process
    grad_accum: int = 1  # micro-batches per optimizer step; global batch = batch_size * grad_accum * processes
    scheduler: str = "cosine"  # learning-rate schedule after warmup: cosine, linear (both decay to 0) or constant
    warmup_steps: int = 0  # linear warmup from 0 to optim.lr over this many steps
    precision: str = "fp32"  # "fp32" or "bf16" (mixed precision through Accelerate autocast)
    seed: int = 0  # seeds data order, adapter dropout and every RNG

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"schedule.scheduler={self.scheduler!r}: use one of {SCHEDULERS}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"schedule.precision={self.precision!r}: use one of {PRECISIONS}")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"schedule.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"schedule.max_steps must be >= 1 or null, got {self.max_steps}")
        if self.warmup_steps < 0:
            raise ConfigError(f"schedule.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass
class CheckpointSection:
    every: int = 500  # save a checkpoint every N optimizer steps (and always at the end)
    keep: int = 2  # keep only the newest N step checkpoints (the final adapter is always kept)

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep < 1:
            raise ConfigError(f"checkpointing.every and checkpointing.keep must be >= 1, got {self.every}, {self.keep}")


@dataclass
class LoggingSection:
    every: int = 1  # write metrics to metrics.jsonl every N optimizer steps
    progress: bool = True  # show a tqdm progress bar (loss, lr, tokens/s, ETA)
    tensorboard: bool = True  # also write TensorBoard events when the tensorboard package is installed
    plot: bool = True  # write loss.png (loss curve) at the end

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"logging.every must be >= 1, got {self.every}")


@dataclass
class EvalSection:
    before: bool = False  # evaluate the base model on data.eval before training
    after: bool = True  # evaluate the trained adapter on data.eval after training (when data.eval is set)
    metric: str = "accuracy"  # "accuracy" (GSM8K-style final number, greedy generation) or "loss" (loss/perplexity)
    batch_size: int = 16  # evaluation batch size
    max_new_tokens: int = 256  # generation budget per answer (accuracy)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"eval.metric={self.metric!r}: use one of {METRICS}")


@dataclass
class TrainConfig:
    output_dir: str = "runs/bone"  # run folder: checkpoints/, adapter/, metrics.jsonl, loss.png, config.yaml
    method: str = "bone"  # what to train: "bone" (Bone adapters, the bone section), "lora" / "pissa" / "dora" (PEFT, the lora section) or "full" (every weight)
    model: ModelSection = field(default_factory=ModelSection)  # base model
    bone: BoneConfig = field(default_factory=BoneConfig)  # adapter options, passed straight to bone.BoneConfig
    lora: LoraSection = field(default_factory=LoraSection)  # LoRA / PiSSA / DoRA baselines (method lora, pissa or dora)
    data: DataSection = field(default_factory=DataSection)  # datasets, fields, template, lengths
    optim: OptimSection = field(default_factory=OptimSection)  # AdamW
    schedule: ScheduleSection = field(default_factory=ScheduleSection)  # steps, batches, lr schedule, precision, seed
    checkpointing: CheckpointSection = field(default_factory=CheckpointSection)  # checkpoint frequency and retention
    logging: LoggingSection = field(default_factory=LoggingSection)  # progress bar, metrics, plot
    eval: EvalSection = field(default_factory=EvalSection)  # evaluation before/after training

    def __post_init__(self) -> None:
        from ..methods import get

        get(self.method)  # ConfigError naming the known methods

    def run_defining(self) -> dict:
        """What a resumed run must share with the checkpoint (everything that changes the math), as
        {dotted key: value}. The split of the global batch into processes x batch_size x grad_accum
        may change (the trainer checks the global batch), so a run can resume on another number of GPUs."""
        flat = _flatten({k: v for k, v in options.to_dict(self).items() if k in RUN_DEFINING})
        return {k: v for k, v in flat.items() if k not in ("schedule.batch_size", "schedule.grad_accum")}


RUN_DEFINING = ("method", "model", "bone", "lora", "data", "optim", "schedule")  # the sections (and keys) that fix the math


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """TrainConfig from an optional YAML file plus command-line overrides (see `bone.options.load`)."""
    return options.load(TrainConfig, path, overrides)
