"""`python -m bone.bench` / `bone bench`: Flash-Bone vs PEFT training-step benchmark on a
Llama-shaped model; see `setups` (what runs), `measure` (how) and `scale` (the 7B table)."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import platform
from pathlib import Path
from statistics import median

from ..errors import ConfigError, MissingDependencyError
from ..fs import atomic_write
from ..options import field_comments
from . import report, setups
from .scale import scale_table


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bone bench", description=__doc__.split(";")[0])
    notes = field_comments(setups.BenchConfig)
    for f in dataclasses.fields(setups.BenchConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=f.default,
                       help=f"{notes.get(f.name, '')} (default {f.default})")
    p.add_argument("--methods", default=",".join(setups.SETUPS), help="comma-separated subset of: " + ", ".join(setups.SETUPS))
    p.add_argument("--repeats", type=int, default=7, help="timed interleaved rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--rss-steps", type=int, default=2, help="steps each peak-RSS subprocess runs; 0 skips RSS")
    p.add_argument("--out", type=Path, default=Path("out/bench"), help="directory for bench.json / bench.png / bench.md")
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    return p


def _config(args) -> setups.BenchConfig:
    for name, low in (("repeats", 1), ("warmup", 0), ("threads", 1), ("rss_steps", 0)):
        if getattr(args, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} exists and is not a directory; name a folder")
    cfg = setups.BenchConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(setups.BenchConfig)})
    cfg.check()
    return cfg


def _model_argv(args) -> list[str]:
    argv = [f"--{f.name.replace('_', '-')}={getattr(args, f.name)}" for f in dataclasses.fields(setups.BenchConfig)]
    return argv + [f"--threads={args.threads}", f"--rss-steps={args.rss_steps}"]


def _rss_child(args, cfg) -> int:
    from . import measure

    model = setups.make(args.rss_child, setups.build_base(cfg), cfg)
    step = measure.stepper(model, setups.trainable(model), setups.batch(cfg))
    for _ in range(args.rss_steps):
        step()
    print(json.dumps({"peak_rss_mb": measure.peak_rss_mb()}))
    return 0


def _methods(args) -> list[str]:
    """The --methods list, checked: known names, the frozen baseline among them, PEFT installed if needed."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "frozen" not in methods or any(m not in setups.SETUPS for m in methods):
        raise ConfigError(f"--methods must include 'frozen' and only use {list(setups.SETUPS)}; got {methods}")
    need_peft = [m for m in methods if setups.SETUPS[m].needs_peft]
    if need_peft and importlib.util.find_spec("peft") is None:
        raise MissingDependencyError(f"{', '.join(need_peft)} need PEFT (pip install 'peft>=0.17'), "
                                     "or leave them out of --methods")
    return methods


def run(args, cfg) -> dict:
    """Measure every requested method; returns the JSON-ready result."""
    import torch

    from . import measure

    methods = _methods(args)
    rss = {m: measure.child_peak_rss(m, _model_argv(args)) if args.rss_steps else None for m in methods}
    base, ids = setups.build_base(cfg), setups.batch(cfg)
    models = {m: setups.make(m, base, cfg) for m in methods}
    kept = {m: measure.kept_bytes(models[m], ids) for m in methods}
    steps = {m: measure.stepper(models[m], setups.trainable(models[m]), ids) for m in methods}
    times, cpu = measure.time_interleaved(steps, args.repeats, args.warmup)
    t0, c0 = median(times["frozen"]), median(cpu["frozen"])
    rows = {m: {"about": setups.SETUPS[m].about, "trainable": sum(p.numel() for p in setups.trainable(models[m])),
                "step_s": median(times[m]), "step_ratio": median(times[m]) / t0,
                "cpu_s": median(cpu[m]), "cpu_ratio": median(cpu[m]) / c0,
                "step_times_s": times[m], "cpu_times_s": cpu[m], "kept_bytes": kept[m],
                "extra_kept_bytes": kept[m] - kept["frozen"], "peak_rss_mb": rss[m]} for m in methods}
    return {"config": dataclasses.asdict(cfg), "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "rows": rows,
            "targets": targets(rows)}


def targets(rows: dict) -> dict:
    """Flash-Bone against PEFT MiSS and the frozen base, as measured ratios, each key with the bound
    Flash-Bone was built to meet (None where a method was not run)."""
    def ratio(a, b, key):
        return rows[a][key] / rows[b][key] if a in rows and b in rows and rows[b][key] else None
    return {"col step / peft-bat step (<= 0.95)": ratio("bone-col", "peft-bat", "step_s"),
            "col extra kept / peft-bat extra kept (<= 0.25)": ratio("bone-col", "peft-bat", "extra_kept_bytes"),
            "shard step / peft-shard step (<= 1)": ratio("bone-shard", "peft-shard", "step_s"),
            "shard step / frozen step (<= 1.05)": ratio("bone-shard", "frozen", "step_s"),
            "col CPU time / peft-bat CPU time": ratio("bone-col", "peft-bat", "cpu_s"),
            "shard CPU time / peft-shard CPU time": ratio("bone-shard", "peft-shard", "cpu_s"),
            "shard CPU time / frozen CPU time": ratio("bone-shard", "frozen", "cpu_s")}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; bad arguments raise ConfigError (MissingDependencyError without PEFT)
    before anything is built or written."""
    args = _parser().parse_args(argv)  # --help and usage errors stop here, without torch
    cfg = _config(args)
    import torch

    torch.set_num_threads(args.threads)
    if args.rss_child:
        return _rss_child(args, cfg)
    result = run(args, cfg)
    md = report.table(result["rows"])
    tg = "\n".join(f"- {k}: {'-' if v is None else f'{v:.3f}'}" for k, v in result["targets"].items())
    scale = scale_table()
    args.out.mkdir(parents=True, exist_ok=True)
    title = (f"Llama {cfg.layers}x{cfg.hidden} (mlp {cfg.intermediate}), batch {cfg.batch}x{cfg.seq}, r={cfg.r}, "
             f"fp32, {args.threads} threads, median of {args.repeats}")
    report.write_json(args.out / "bench.json", result)
    report.write_png(args.out / "bench.png", result["rows"], title, {m: setups.SETUPS[m].color for m in result["rows"]})
    text = f"{title}\n\n{md}\n\nFlash-Bone vs PEFT MiSS and the frozen base (bound in brackets):\n{tg}\n\n{scale}\n"
    atomic_write(args.out / "bench.md", lambda tmp: Path(tmp).write_text(text))
    print(text)
    print(f"wrote {args.out}/bench.json, bench.png, bench.md")
    return 0
