"""The `bone` command: train, eval, merge, bench.

    bone train CONFIG.yaml [section.key=value ...] [--section.key value ...] [--resume [DIR]] [--overwrite]
    bone eval --model M [--adapter DIR] --data FILE --out DIR [--metric accuracy|loss]
    bone merge --base M --adapter DIR --out DIR_OR_PTH [--overwrite] [--no-check]
    bone bench [...]                      (Flash-Bone vs PEFT benchmark; see bone bench --help)

Errors a user can fix (bad config, missing files, existing outputs, models the targets do not
fit, out of memory) print one clear message and exit with status 1, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

USAGE = """usage: bone <command> [options]

  bone train CONFIG.yaml [section.key=value ...]    fine-tune with a Bone adapter (resumable, multi-GPU)
  bone eval --model M [--adapter DIR] --data FILE   GSM8K-style accuracy or loss/perplexity
  bone merge --base M --adapter DIR --out OUT       fold an adapter into its base model (HF folder or RWKV .pth)
  bone bench [...]                                  Flash-Bone vs PEFT training-step benchmark

Run `bone <command> --help` for the options of each command."""

TRAIN_USAGE = """usage: bone train [CONFIG.yaml] [section.key=value ...] [--section.key VALUE ...]
                  [--resume [RUN_OR_CHECKPOINT_DIR]] [--overwrite] [--stop-at STEP] [--print-config]

Fine-tune a causal LM with a Bone adapter. Options come from CONFIG.yaml, then overrides
(dotted keys, e.g. optim.lr=1e-4 or --bone.r 16). Also runs under
`accelerate launch -m bone train ...` and `torchrun --nproc-per-node N -m bone train ...`.

  --resume [DIR]    continue from the newest checkpoint of output_dir (or of DIR: a run folder
                    or a checkpoints/step-N folder); without CONFIG, the checkpoint's config is used
  --overwrite       delete an existing output_dir (a previous bone run) and start afresh
  --stop-at STEP    stop after optimizer step STEP with a checkpoint (as SIGINT/SIGTERM do)
  --print-config    print the resolved config as commented YAML and exit

Every option, its type, default and meaning:
"""

FIXABLE = (ValueError, KeyError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
           NotADirectoryError, ModuleNotFoundError, OSError)

OOM_HINT = (
    "out of memory. Try, in order: a smaller schedule.batch_size with a larger schedule.grad_accum "
    "(same global batch), model.gradient_checkpointing=true, schedule.precision=bf16 and model.dtype=bfloat16, "
    "a shorter data.max_length, a smaller bone.r, or fewer bone.target_modules"
)


def _split_train_args(argv: list[str]) -> dict:
    """Separate bone train's own flags and the config path from the key=value overrides."""
    out = {"config": None, "resume": None, "overwrite": False, "stop_at": None, "print": False, "help": False, "overrides": []}
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if a in ("-h", "--help"):
            out["help"] = True
        elif a == "--print-config":
            out["print"] = True
        elif a == "--overwrite":
            out["overwrite"] = True
        elif a == "--resume":
            out["resume"] = "latest"
            if nxt is not None and not nxt.startswith("-") and "=" not in nxt and Path(nxt).is_dir():
                out["resume"], i = nxt, i + 1
        elif a.startswith("--resume="):
            out["resume"] = a.split("=", 1)[1]
        elif a == "--stop-at" or a.startswith("--stop-at="):
            raw = a.split("=", 1)[1] if "=" in a else nxt
            i += 0 if "=" in a else 1
            if raw is None or not raw.isdigit():
                raise ValueError(f"--stop-at needs a step number, got {raw!r}")
            out["stop_at"] = int(raw)
        elif a.startswith("--"):
            out["overrides"].append(a)
            if "=" not in a and nxt is not None:
                out["overrides"].append(nxt)
                i += 1
        elif "=" in a:
            out["overrides"].append(a)
        elif out["config"] is None:
            out["config"] = a
        else:
            raise ValueError(f"unexpected argument {a!r}: one CONFIG.yaml, then section.key=value overrides")
        i += 1
    return out


def train_main(argv: list[str]) -> int:
    from .options import render_yaml
    from .train.config import TrainConfig, load_config

    args = _split_train_args(argv)
    if args["help"]:
        print(TRAIN_USAGE + render_yaml(TrainConfig()))
        return 0
    config = args["config"]
    if config is None and args["resume"] not in (None, "latest"):
        saved = Path(args["resume"])
        saved = saved / "config.yaml" if (saved / "config.yaml").is_file() else saved.parent.parent / "config.yaml"
        config = saved if saved.is_file() else None
    cfg = load_config(config, args["overrides"])
    if args["print"]:
        print(render_yaml(cfg))
        return 0
    from .train.launch import leave_gloo
    from .train.trainer import Trainer

    trainer = Trainer(cfg, resume=args["resume"], overwrite=args["overwrite"]).setup()
    code = trainer.run(stop_at=args["stop_at"])
    leave_gloo(trainer.acc, code)  # returns unless this is one of several CPU (gloo) processes
    return code


def eval_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bone eval", description="GSM8K-style accuracy or loss/perplexity of a model (+ adapter) on a data file.")
    p.add_argument("--model", required=True, help="HF model folder, RWKV .pth, merged model, or smollm2-135m")
    p.add_argument("--adapter", help="a bone/PEFT adapter folder to apply to --model")
    p.add_argument("--data", required=True, help=".jsonl/.json/.csv/.parquet file, bundled:arith, or Hub dataset name")
    p.add_argument("--split", default="test", help="split to read (bundled/Hub data; default test)")
    p.add_argument("--limit", type=int, help="only the first N records")
    p.add_argument("--out", required=True, help="folder for results.json and predictions.jsonl")
    p.add_argument("--metric", choices=("accuracy", "loss"), default="accuracy", help="accuracy: greedy generation + final number; loss: loss/perplexity")
    p.add_argument("--template", choices=("alpaca", "chat"), default="alpaca")
    p.add_argument("--prompt-field"), p.add_argument("--response-field"), p.add_argument("--messages-field")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--max-length", type=int, default=512, help="loss metric: tokens per example")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model's)")
    a = p.parse_args(argv)
    import torch

    from . import load, merge
    from .data import load_records, to_examples, tokenize_examples
    from .eval import gsm8k_eval, loss_eval, write_results
    from .models import load_model, load_tokenizer

    records = load_records(a.data, split=a.split, limit=a.limit)
    tokenizer = load_tokenizer(a.tokenizer or a.model)
    model = load_model(a.model)
    if a.adapter:
        merge(load(model, a.adapter))  # folded in: generation runs at base-model speed
    model.eval()
    with torch.no_grad():
        if a.metric == "accuracy":
            metrics, preds = gsm8k_eval(model, tokenizer, records, template=a.template, batch_size=a.batch_size, max_new_tokens=a.max_new_tokens)
        else:
            fields = dict(prompt_field=a.prompt_field, response_field=a.response_field, messages_field=a.messages_field)
            data = tokenize_examples(to_examples(records, **fields), tokenizer, template=a.template, max_length=a.max_length)
            metrics, preds = loss_eval(model, data, batch_size=a.batch_size), []
    write_results(Path(a.out), metrics, preds)
    print(json.dumps(metrics, indent=2))
    print(f"results: {Path(a.out) / 'results.json'}")
    return 0


def merge_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bone merge", description="Fold a Bone adapter into its base model (HF folder or RWKV .pth), streaming, checked.")
    p.add_argument("--base", required=True, help="base HF model folder (safetensors) or RWKV .pth")
    p.add_argument("--adapter", required=True, help="adapter folder (bone train's <output_dir>/adapter)")
    p.add_argument("--out", required=True, help="new folder (HF) or .pth file (RWKV)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out (never an input)")
    p.add_argument("--no-check", action="store_true", help="skip the probe-batch comparison with base + adapter")
    a = p.parse_args(argv)
    from .export import merge

    merge(a.base, a.adapter, a.out, overwrite=a.overwrite, check=not a.no_check)
    return 0


def bench_main(argv: list[str]) -> int:
    from .bench import main

    return main(argv) or 0


def _is_cpu_oom(err: RuntimeError) -> bool:
    """CPU allocation failures are plain RuntimeErrors (torch.OutOfMemoryError is CUDA's)."""
    return "can't allocate memory" in str(err) or "out of memory" in str(err).lower()


COMMANDS = {"train": train_main, "eval": eval_main, "merge": merge_main, "bench": bench_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(USAGE)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {argv[0]!r}; choose one of {sorted(COMMANDS)}", file=sys.stderr)
            return 2
        return 0 if argv else 2
    import torch

    try:
        return COMMANDS[argv[0]](argv[1:])
    except (torch.OutOfMemoryError, MemoryError):
        print(f"bone {argv[0]}: error: {OOM_HINT}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        if not _is_cpu_oom(err):
            raise
        print(f"bone {argv[0]}: error: {OOM_HINT} ({err})", file=sys.stderr)
        return 1
    except FIXABLE as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"bone {argv[0]}: error: {msg}", file=sys.stderr)
        return 1
