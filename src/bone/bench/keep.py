"""The keep suite: BoneConfig.keep_merged's trade, time against memory, at several tokens per step.

For each T in --tokens the model of --shape runs one training step per method (frozen, bone-col,
bone-col-keep, bone-shard, bone-shard-keep), interleaved as in the step suite, with sequences of
min(T, 256) tokens (batch T / that), so attention stays a small part at every T. Reported per T:
step time over the frozen base's (wall and CPU), keeping's time ratio (keep / rebuild), and the
bytes kept for backward beyond the frozen model's (the merged weights are what keeping adds).
Writes keep.json and keep.md.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import ConfigError
from ..fs import atomic_write
from . import report, step
from .config import BenchConfig

METHODS = ["frozen", "bone-col", "bone-col-keep", "bone-shard", "bone-shard-keep"]
MAX_SEQ = 256  # tokens per sequence; longer T = more sequences
MIB = 1024 ** 2


def token_counts(spec: str) -> list[int]:
    try:
        counts = [int(t) for t in spec.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--tokens must be comma-separated whole numbers, got {spec!r}") from None
    bad = [t for t in counts if t < 1 or (t > MAX_SEQ and t % MAX_SEQ)]
    if not counts or bad:
        raise ConfigError(f"--tokens: each count must be 1..{MAX_SEQ} or a multiple of {MAX_SEQ}, got {spec!r}")
    return counts


def shape_for(cfg: BenchConfig, tokens: int) -> BenchConfig:
    seq = min(tokens, MAX_SEQ)
    return dataclasses.replace(cfg, seq=seq, batch=tokens // seq)


def table(results: dict[int, dict]) -> str:
    lines = ["| tokens / step | method | step / frozen (wall) | CPU / frozen | keep / rebuild (CPU) | extra kept vs frozen (MiB) |",
             "|---:|---|---:|---:|---:|---:|"]
    for tokens, result in results.items():
        rows = result["rows"]
        for name, r in rows.items():
            if name == "frozen":
                continue
            base = name.removesuffix("-keep")
            trade = f"{r['cpu_s'] / rows[base]['cpu_s']:.3f}" if name.endswith("-keep") else "-"
            lines.append(f"| {tokens} | {name} | {r['step_ratio']:.3f} | {r['cpu_ratio']:.3f} | {trade} | "
                         f"{r['extra_kept_bytes'] / MIB:.1f} |")
    return "\n".join(lines)


def main(args, cfg: BenchConfig) -> int:
    counts = token_counts(args.tokens)
    methods = step.methods_of(",".join(METHODS))
    results = {}
    for tokens in counts:
        shaped = shape_for(cfg, tokens)
        results[tokens] = step.run(args, shaped, methods, rss=False)
        print(f"T={tokens}: done", flush=True)
    head = (f"keep_merged: {step.title(cfg, args).split(', batch')[0]}, r={cfg.r}, fp32, {args.threads} threads, "
            f"median of {args.repeats}, load average {results[counts[-1]]['load_average']:.1f}")
    text = f"{head}\n\n{table(results)}\n"
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(args.out / "keep.json", {str(t): r for t, r in results.items()})
    atomic_write(args.out / "keep.md", lambda tmp: Path(tmp).write_text(text))
    print(text)
    print(f"wrote {args.out}/keep.json, keep.md")
    return 0
