"""`bone generate`: replies to one prompt or a JSONL file of prompts, batched, greedy or sampled.

With several adapters each prompt is answered by every one of them in turn (side by side, to
compare), unless its line names one in an "adapter" field (a loaded name, or "base" for the model
without adapter). A single --prompt streams its reply to the terminal; --out writes one JSON line
per reply: the prompt's own fields plus "adapter", "response", "finish_reason", "prompt_tokens"
and "new_tokens". Everything (options, adapters, every line of the file, --out) is checked before
the model is loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import inference
from .common import new_parser

ABOUT = "replies to a prompt or a JSONL file of prompts (model + adapters)"
USAGE = "bone generate --model M --prompt T | --file F"
OOM_HINT = "Try a smaller --batch-size or --max-new-tokens, or --dtype bfloat16"
DESCRIPTION = """\
Generate replies with a model and its adapters. Prompts: --prompt TEXT, or --file PROMPTS.jsonl with one
JSON object per line, {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}, ...]}, and
optionally "adapter": NAME (which loaded adapter answers it; "base" = the model without adapter).
Without an "adapter" field, every loaded adapter answers, one after the other."""


def parser() -> argparse.ArgumentParser:
    p = new_parser("bone generate", description=DESCRIPTION)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="one prompt (its reply streams to the terminal)")
    what.add_argument("--file", help="a JSONL file of prompts (see above)")
    p.add_argument("--out", help="write the replies here as JSONL (one line per reply); default: print them")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default: 8)")
    inference.add_arguments(p)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    return parser().parse_args(argv)


def plan(prompts, specs, where: str) -> list[tuple[int, str]]:
    """(prompt index, adapter name) for every reply, in output order; a line's "adapter" field must
    name a loaded adapter (DataError naming the line)."""
    from ..errors import DataError

    names = [s.name for s in specs] or [inference.BASE]
    jobs = []
    for i, p in enumerate(prompts):
        wanted = (p.record or {}).get("adapter")
        if wanted is None:
            jobs += [(i, name) for name in names]
            continue
        if wanted != inference.BASE and wanted not in names:
            raise DataError(f"{where} line {p.line}: \"adapter\": {wanted!r} is not loaded; loaded: "
                            f"{inference.listing(specs)}; fix the line or load it with --adapter {wanted}=DIR")
        jobs.append((i, wanted))
    return jobs


def _prompts(a: argparse.Namespace):
    from ..generation.prompt_file import Prompt, read_prompt_file

    if a.prompt is not None:
        return [Prompt.from_text(a.prompt, a.system)]
    prompts = read_prompt_file(a.file)
    if a.system:
        for p in prompts:
            if p.messages[0]["role"] != "system":
                p.messages = [{"role": "system", "content": a.system}] + p.messages
    return prompts


def run(a: argparse.Namespace) -> int:
    from ..errors import ConfigError, MissingPathError, OutputExistsError
    from ..fs import write_text
    from ..generation.batch import generate

    if a.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive whole number, got {a.batch_size}")
    out = Path(a.out) if a.out else None
    if out is not None and out.exists() and not a.overwrite:
        raise OutputExistsError(f"{out} exists: pass --overwrite to replace it, or choose another --out")
    if out is not None and not out.parent.is_dir():
        raise MissingPathError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    cfg = inference.generation_config(a)
    specs = inference.adapter_specs(a.adapter)
    prompts = _prompts(a)
    jobs = plan(prompts, specs, str(a.file))
    loaded = inference.Loaded(a, specs)
    stream = a.prompt is not None
    replies = {}
    for name in dict.fromkeys(n for _, n in jobs):  # one adapter at a time, in order of first use
        mine = [i for i, n in jobs if n == name]
        fmt = loaded.format(name)
        loaded.switch(name)
        if stream and len(specs) > 1:
            print(f"[{name}]", flush=True)
        on_text = (lambda _i, piece: print(piece, end="", flush=True)) if stream else None
        done = generate(loaded.model, loaded.tokenizer, [prompts[i] for i in mine], fmt, cfg,
                        batch_size=a.batch_size, on_text=on_text)
        if stream:
            print(flush=True)
        replies.update({(i, name): c for i, c in zip(mine, done)})
    records = [_record(prompts[i], name, replies[i, name]) for i, name in jobs]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if out is not None:
        write_text(out, text)
        print(f"wrote {len(records)} replies to {out}", file=sys.stderr)
    elif not stream:
        sys.stdout.write(text)
    return 0


def _record(prompt, name: str, c) -> dict:
    head = prompt.record if prompt.record is not None else {"prompt": prompt.messages[-1]["content"]}
    return {**head, "adapter": name, "response": c.text, "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens, "new_tokens": len(c.token_ids)}
