"""`bone eval`: accuracy or loss/perplexity of a model (+ adapter) on a data file."""
from __future__ import annotations

import argparse

from .common import at_least, new_parser

ABOUT = "GSM8K-style accuracy or loss/perplexity"
USAGE = "bone eval --model M [--adapter DIR] --data FILE"
OOM_HINT = "Try a smaller --batch-size, a shorter --max-new-tokens (accuracy) or --max-length (loss)"


def parser() -> argparse.ArgumentParser:
    from ..data.templates import TEMPLATES
    from ..eval import METRICS

    p = new_parser("bone eval", description="GSM8K-style accuracy or loss/perplexity of a model (+ adapter) on a data file.")
    p.add_argument("--model", required=True, help="HF model folder, RWKV .pth, merged model, or smollm2-135m")
    p.add_argument("--adapter", help="an adapter folder to apply to --model: bone train's <output_dir>/adapter (Bone, LoRA, PiSSA, DoRA or "
                        "full), or a PEFT MiSS / Bone / LoRA one")
    p.add_argument("--data", required=True, help=".jsonl/.json/.csv/.parquet file, bundled:arith, or Hub dataset name")
    p.add_argument("--split", default="test", help="split to read (bundled/Hub data; default test)")
    p.add_argument("--limit", type=at_least(1), help="only the first N records")
    p.add_argument("--out", required=True, help="folder for results.json and predictions.jsonl")
    p.add_argument("--metric", choices=METRICS, default=METRICS[0],
                   help="accuracy: greedy generation + final number; loss: loss/perplexity")
    p.add_argument("--template", choices=TEMPLATES, default=TEMPLATES[0])
    p.add_argument("--prompt-field", help="record field holding the prompt (default: auto-detected)")
    p.add_argument("--response-field", help="record field holding the answer (default: auto-detected)")
    p.add_argument("--messages-field", help="record field holding chat messages (instead of prompt and answer)")
    p.add_argument("--batch-size", type=at_least(1), default=8)
    p.add_argument("--max-new-tokens", type=at_least(1), default=256, help="accuracy: generation budget per answer")
    p.add_argument("--max-length", type=at_least(2), default=512, help="loss: tokens per example")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the model's)")
    p.add_argument("--quantize", choices=("nf4", "fp4", "int8"),
                   help="load --model quantized by bitsandbytes, e.g. as the adapter was trained (QBone)")
    p.add_argument("--compute-dtype", choices=("float32", "bfloat16", "float16"),
                   help="with --quantize: the dtype quantized layers compute in (default float32)")
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    return parser().parse_args(argv)


def run(a: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch

    from ..data import load_records
    from ..errors import ConfigError
    from ..eval import eval_data, evaluate, write_results
    from ..methods import owner
    from ..models import load_model, load_tokenizer

    if a.compute_dtype and not a.quantize:
        raise ConfigError("--compute-dtype applies to a quantized base: add --quantize nf4, fp4 or int8")
    method = owner(a.adapter) if a.adapter else None  # checked before anything is loaded
    if method is not None:
        method.require()
    records = load_records(a.data, split=a.split, limit=a.limit)
    tokenizer = load_tokenizer(a.tokenizer or a.model)
    fields = dict(prompt_field=a.prompt_field, response_field=a.response_field, messages_field=a.messages_field)
    data = eval_data(records, tokenizer, metric=a.metric, template=a.template, fields=fields, max_length=a.max_length,
                     source=f"--data {a.data}")
    model = load_model(a.model, quantize=a.quantize, compute_dtype=a.compute_dtype)
    if method is not None:
        model = method.load(model, Path(a.adapter))
        method.fold(model)  # generation runs at base-model speed
    model.eval()
    with torch.no_grad():
        metrics, preds = evaluate(model, tokenizer, data, metric=a.metric, template=a.template,
                                  batch_size=a.batch_size, max_new_tokens=a.max_new_tokens)
    write_results(Path(a.out), metrics, preds)
    print(json.dumps(metrics, indent=2))
    print(f"results: {Path(a.out) / 'results.json'}")
    return 0
