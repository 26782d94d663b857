"""The train suite: `bone train` against transformers.Trainer + PEFT MiSS, end to end, same data.

Both sides train the demo config (`configs/demo.yaml`: the embedded SmolLM2-135M-Instruct, bundled
arithmetic problems, alpaca template, max length 128, batch 4, AdamW lr 1e-4, cosine, gradient
clipping 1.0, seed 0, fp32) for --steps optimizer steps with each Bone variant (col: PEFT
init_weights="bat"; shard: PEFT's MiSS default), r=64 on the seven projections. They see the same
micro-batches in the same order (the examples bone's BatchPlan gives each step, fed to Trainer in
that order with train_sampling_strategy="sequential", padded by the same collate). What is timed is
a whole run after its setup, the same work on both sides: bone's `Trainer.train()` (every step,
progress bar, metrics.jsonl, its checkpoint at the last step and the final adapter; no evaluation)
and `transformers.Trainer.train()` + `save_model()` (logging every step; save_strategy "steps" with
save_steps = steps, so one checkpoint at the last step, as Trainer's default strategy writes at the
end of a run; then the final adapter); seconds per step = run time / steps. Runs alternate (bone,
Trainer) per variant per round; medians over --repeats rounds. Writes train.json and train.md.
"""
from __future__ import annotations

import importlib.util
import platform
import tempfile
import time
from pathlib import Path
from statistics import median

import torch

from ..errors import ConfigError, MissingDependencyError
from ..fs import atomic_write
from . import measure, report

VARIANTS = ("col", "shard")
DEMO = {  # configs/demo.yaml without evaluation, checkpoints, plots or keep_merged (the keep_merged=auto rows add it)
    "model": {"path": "smollm2-135m"},
    "bone": {"variant": "col", "r": 64,
             "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    "data": {"train": "bundled:arith", "train_limit": 2000, "template": "alpaca", "max_length": 128},
    "optim": {"lr": 1.0e-4},
    "schedule": {"batch_size": 4, "scheduler": "cosine", "warmup_steps": 0, "seed": 0},
    "logging": {"tensorboard": False, "plot": False},
    "eval": {"before": False, "after": False},
}


def bone_config(variant: str, steps: int, out: Path, **bone):
    """The demo TrainConfig for `variant`, `steps` steps, written under `out`; `bone`: extra BoneConfig fields."""
    from ..options import from_dict
    from ..train.config import TrainConfig

    data = {**DEMO, "output_dir": str(out), "bone": {**DEMO["bone"], "variant": variant, **bone},
            "schedule": {**DEMO["schedule"], "max_steps": steps}, "checkpointing": {"every": steps}}
    return from_dict(TrainConfig, data)


def _timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def run_bone(cfg) -> tuple[float, float]:
    """(wall, CPU) seconds of `bone train`'s loop for cfg (setup not timed)."""
    from ..train.trainer import Trainer

    trainer = Trainer(cfg).setup()
    return _timed(trainer.train)


def _hf_data(cfg):
    """bone's tokenized training set in the order bone's BatchPlan visits it (epoch 0), and the pad id."""
    from ..data import load_records, to_examples, tokenize_examples
    from ..models import load_tokenizer
    from ..train.sampler import BatchPlan

    tok = load_tokenizer(cfg.model.path)
    d = cfg.data
    rows = tokenize_examples(to_examples(load_records(d.train, split=d.train_split, limit=d.train_limit)), tok,
                             template=d.template, max_length=d.max_length)
    plan = BatchPlan(len(rows), cfg.schedule.batch_size, 1, 1, 0, cfg.schedule.seed)
    return tok, [rows[i] for i in plan.order(0)]


def run_hf(cfg, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of transformers.Trainer + PEFT MiSS training the same steps (setup not timed)."""
    import peft
    from transformers import Trainer, TrainingArguments

    from .. import variants
    from ..data import collate
    from ..models import family_of_model, load_model

    tok, rows = _hf_data(cfg)
    model = load_model(cfg.model.path)
    family_of_model(model).prepare(model, tok)
    b = cfg.bone
    model = peft.get_peft_model(model, peft.MissConfig(r=b.r, init_weights=variants.get(b.variant).peft_init,
                                                       target_modules=list(b.target_modules)))
    o, s = cfg.optim, cfg.schedule
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=s.batch_size, max_steps=s.max_steps, learning_rate=o.lr,
        lr_scheduler_type=s.scheduler, warmup_steps=s.warmup_steps, weight_decay=o.weight_decay, adam_beta1=o.beta1,
        adam_beta2=o.beta2, adam_epsilon=o.eps, max_grad_norm=o.max_grad_norm, optim="adamw_torch_fused", seed=s.seed,
        logging_steps=1, save_strategy="steps", save_steps=s.max_steps, report_to=[], use_cpu=True, dataloader_num_workers=0,
        train_sampling_strategy="sequential", remove_unused_columns=False)
    pad = tok.pad_token_id
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=lambda batch: collate(batch, pad))
    return _timed(lambda: (trainer.train(), trainer.save_model(str(out / "final"))))


def _check(args) -> list[str]:
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not chosen or any(v not in VARIANTS for v in chosen):
        raise ConfigError(f"--variants: choose from {list(VARIANTS)}, got {args.variants!r}")
    for pkg, why in (("peft", "PEFT MiSS"), ("transformers", "transformers.Trainer")):
        if importlib.util.find_spec(pkg) is None:
            raise MissingDependencyError(f"the train suite compares against {why}: pip install {pkg}")
    return chosen


def main(args) -> int:
    chosen = _check(args)
    sides = {}  # name -> (variant, run)
    for v in chosen:
        sides[f"bone {v}"] = (v, lambda out, v=v: run_bone(bone_config(v, args.steps, out)))
        sides[f"bone {v}, keep_merged=auto"] = (v, lambda out, v=v: run_bone(bone_config(v, args.steps, out, keep_merged="auto")))
        sides[f"Trainer + PEFT {v}"] = (v, lambda out, v=v: run_hf(bone_config(v, args.steps, out), out))
    wall = {k: [] for k in sides}
    cpu = {k: [] for k in sides}
    for _ in range(args.repeats):
        for name, (_, side) in sides.items():
            with tempfile.TemporaryDirectory(prefix="bone-bench-") as tmp:
                w, c = side(Path(tmp) / "run")
            wall[name].append(w / args.steps)
            cpu[name].append(c / args.steps)
            print(f"{name}: {w / args.steps:.3f} s/step", flush=True)
    rows = {k: {"step_s": median(wall[k]), "cpu_s": median(cpu[k]), "step_times_s": wall[k], "cpu_times_s": cpu[k]}
            for k in sides}
    lines = ["| run | s / step (wall) | s / step (CPU) | wall / Trainer + PEFT | CPU / Trainer + PEFT |", "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        ref = rows[f"Trainer + PEFT {sides[name][0]}"]
        lines.append(f"| {name} | {r['step_s']:.3f} | {r['cpu_s']:.3f} | {r['step_s'] / ref['step_s']:.3f} | "
                     f"{r['cpu_s'] / ref['cpu_s']:.3f} |")
    head = (f"end to end, demo config (SmolLM2-135M, batch 4, max length 128, r=64, fp32), {args.steps} steps per run, "
            f"{args.threads} threads, median of {args.repeats} rounds, load average {measure.load_average():.1f}")
    text = f"{head}\n\n" + "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(args.out / "train.json", {"steps": args.steps, "repeats": args.repeats, "threads": args.threads,
                                                "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                                                "load_average": measure.load_average(), "demo": DEMO, "rows": rows})
    atomic_write(args.out / "train.md", lambda tmp: Path(tmp).write_text(text))
    print(text)
    print(f"wrote {args.out}/train.json, train.md")
    return 0

