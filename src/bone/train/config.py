"""TrainConfig: every option of `bone train`, one typed field each, grouped in sections.

YAML files and command-line overrides are read and validated by `bone.options` (`load_config`);
the comment after each field is its documentation (`bone train --help` prints it). Importing this
module does not import torch; building a TrainConfig checks `method` against `bone.methods`, which does.
"""
from __future__ import annotations

import math
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
SEED_LIMIT = 2**31  # numpy takes seeds below 2**32; a resume on another process count re-seeds with seed + step


def check_range(key: str, value, ok: bool, rule: str) -> None:
    """ConfigError `key must be RULE, got VALUE` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value}")


def _at_least(section: str, obj, low: int, names: tuple[str, ...], *, nullable: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        check_range(f"{section}.{name}", value, (nullable and value is None) or (value is not None and value >= low),
                    f">= {low}" + (" or null" if nullable else ""))


@dataclass
class ModelSection:
    path: str = "smollm2-135m"  # Hugging Face model folder, RWKV .pth file, embedded "smollm2-135m", or Hub name (online only)
    dtype: str = "float32"  # dtype the frozen base weights are loaded in: float32, bfloat16 or float16
    tokenizer: str | None = None  # tokenizer folder or name; None = the model's own
    gradient_checkpointing: bool = False  # recompute activations in backward (non-reentrant): less memory, ~30% slower
    quantize: str | None = None  # QBone: load the frozen base quantized by bitsandbytes: nf4, fp4, int8 or null (pip install "bone[quant]")
    quant_compute_dtype: str = "float32"  # with quantize: the dtype quantized layers compute in (float32, bfloat16, float16)

    def __post_init__(self) -> None:
        if self.dtype not in MODEL_DTYPES:
            raise ConfigError(f"model.dtype={self.dtype!r}: use one of {MODEL_DTYPES}")
        if self.quantize is not None:
            self.quant()  # validates both quantization fields
        elif self.quant_compute_dtype != "float32":
            raise ConfigError("model.quant_compute_dtype applies to a quantized base only: set model.quantize too")

    def quant(self):
        """The QuantConfig of `quantize` (None without quantization)."""
        from ..quant.config import parse

        try:
            return parse(self.quantize, self.quant_compute_dtype if self.quantize is not None else None)
        except ConfigError as err:
            raise ConfigError(f"model.{err}".replace("model.compute_dtype=", "model.quant_compute_dtype=")) from None


@dataclass
class LoraSection:
    r: int | str = "auto"  # LoRA rank, or "auto": the rank whose trainable count is closest to the bone section's on the same model
    alpha: float | None = None  # scale = alpha / r; None = alpha equal to the rank (scale 1)
    dropout: float = 0.0  # dropout on the LoRA input path (PEFT lora_dropout)
    target_modules: list[str] | str | None = None  # same forms as bone.target_modules; None = the bone section's targets

    def __post_init__(self) -> None:
        check_range("lora.r", self.r, self.r == "auto" or (isinstance(self.r, int) and self.r >= 1), '>= 1 or "auto"')
        check_range("lora.alpha", self.alpha, self.alpha is None or (math.isfinite(self.alpha) and self.alpha > 0),
                    "> 0 and finite, or null")
        check_range("lora.dropout", self.dropout, 0.0 <= self.dropout < 1.0, "in [0, 1)")


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
    eval_prompt_field: str | None = None  # the held-out data's prompt field, when its fields differ from the training data's (all three eval_* unset = the training data's fields)
    eval_response_field: str | None = None  # the held-out data's answer field (see eval_prompt_field)
    eval_messages_field: str | None = None  # the held-out data's chat messages field (see eval_prompt_field)
    template: str = "alpaca"  # prompt template: "alpaca" (the seed's) or "chat" (the tokenizer's chat template)
    max_length: int = 512  # tokens per example; longer ones are truncated (counted and reported)
    packing: bool = False  # pack several examples into each max_length row

    def fields(self, held_out: bool = False) -> dict[str, str | None]:
        """`to_examples`' field arguments for the training data, or (held_out) for the held-out data:
        the eval_* settings when any is set (unset ones auto-detected), else the training data's."""
        names = ("prompt_field", "response_field", "messages_field")
        if held_out and any(getattr(self, "eval_" + n) is not None for n in names):
            return {n: getattr(self, "eval_" + n) for n in names}
        return {n: getattr(self, n) for n in names}

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ConfigError(f"data.template={self.template!r}: use one of {TEMPLATES}")
        _at_least("data", self, 2, ("max_length",))
        _at_least("data", self, 1, ("train_limit", "eval_limit"), nullable=True)


@dataclass
class OptimSection:
    lr: float = 2e-5  # peak learning rate of AdamW (only adapter parameters are trained)
    parts_lr: float | None = None  # peak learning rate of bone.train_parts (their own AdamW group, same schedule); None = lr
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.999  # AdamW second-moment decay
    eps: float = 1e-8  # AdamW epsilon
    max_grad_norm: float | None = 1.0  # clip the global gradient norm to this value (None = no clipping)
    fused: bool = True  # torch's fused AdamW: one kernel over all tensors, 16-bit tensors updated in fp32 math (transformers.Trainer's default); false = the per-tensor loop. DeepSpeed and FSDP2 runs always use the loop
    skip_nonfinite: int = 0  # skip up to N steps whose loss or gradients are NaN/inf (no update, no lr step); 0 = stop at the first

    def __post_init__(self) -> None:
        finite = {k: getattr(self, k) is not None and math.isfinite(getattr(self, k)) for k in
                  ("lr", "weight_decay", "beta1", "beta2", "eps", "max_grad_norm")}
        check_range("optim.lr", self.lr, finite["lr"] and self.lr > 0, "> 0 and finite")
        check_range("optim.weight_decay", self.weight_decay, finite["weight_decay"] and self.weight_decay >= 0, ">= 0 and finite")
        for name in ("beta1", "beta2"):
            check_range(f"optim.{name}", getattr(self, name), finite[name] and 0 <= getattr(self, name) < 1, "in [0, 1)")
        check_range("optim.eps", self.eps, finite["eps"] and self.eps > 0, "> 0 and finite")
        check_range("optim.max_grad_norm", self.max_grad_norm, self.max_grad_norm is None or
                    (finite["max_grad_norm"] and self.max_grad_norm > 0), "> 0 (clip to that norm) or null (no clipping)")
        check_range("optim.lr * optim.weight_decay", self.lr * self.weight_decay, self.lr * self.weight_decay < 1,
                    "< 1 (AdamW multiplies the weights by 1 - lr * weight_decay every step)")
        _at_least("optim", self, 0, ("skip_nonfinite",))
        check_range("optim.parts_lr", self.parts_lr, self.parts_lr is None or
                    (math.isfinite(self.parts_lr) and self.parts_lr > 0), "> 0 and finite, or null")


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
        _at_least("schedule", self, 1, ("epochs", "batch_size", "grad_accum"))
        _at_least("schedule", self, 1, ("max_steps",), nullable=True)
        _at_least("schedule", self, 0, ("warmup_steps",))
        check_range("schedule.seed", self.seed, 0 <= self.seed < SEED_LIMIT, f"in [0, {SEED_LIMIT})")


@dataclass
class CheckpointSection:
    every: int = 500  # save a checkpoint every N optimizer steps (and always at the end)
    keep: int = 2  # keep only the newest N step checkpoints (the final adapter is always kept)

    def __post_init__(self) -> None:
        _at_least("checkpointing", self, 1, ("every", "keep"))


@dataclass
class LoggingSection:
    every: int = 1  # write metrics to metrics.jsonl every N optimizer steps
    progress: bool = True  # show a tqdm progress bar (loss, lr, tokens/s, ETA)
    tensorboard: bool = True  # also write TensorBoard events when the tensorboard package is installed
    plot: bool = True  # write loss.png (loss curve) at the end

    def __post_init__(self) -> None:
        _at_least("logging", self, 1, ("every",))


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
        _at_least("eval", self, 1, ("batch_size", "max_new_tokens"))


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
        if self.optim.parts_lr is not None and not self.bone.train_parts:
            raise ConfigError("optim.parts_lr is the learning rate of bone.train_parts, which is empty: "
                              "set bone.train_parts (e.g. [time, ln]) or leave optim.parts_lr out")

    def run_defining(self) -> dict:
        """What a resumed run must share with the checkpoint (everything that changes the math), as
        {dotted key: value}, without RESUME_MAY_CHANGE: the split of the global batch into processes x
        batch_size x grad_accum (so a run can resume on another number of GPUs) and optim.skip_nonfinite."""
        flat = _flatten({k: v for k, v in options.to_dict(self).items() if k in RUN_DEFINING})
        return {k: v for k, v in flat.items() if k not in RESUME_MAY_CHANGE}


RUN_DEFINING = ("method", "model", "bone", "lora", "data", "optim", "schedule")  # the sections (and keys) that fix the math
# keys of those sections a resumed run may change: the split of the global batch (the trainer checks the
# global batch), and how many non-finite steps may be skipped (to get past one that stopped the run)
RESUME_MAY_CHANGE = ("schedule.batch_size", "schedule.grad_accum", "optim.skip_nonfinite")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """TrainConfig from an optional YAML file plus command-line overrides (see `bone.options.load`)."""
    return options.load(TrainConfig, path, overrides)
