"""The step suite: one training step of a Llama-shaped model per method (see `setups`, `measure`),
interleaved; writes bench.json / bench.png / bench.md with the 7B memory table (`scale`)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import platform
from pathlib import Path
from statistics import median

import torch

from ..errors import ConfigError, MissingDependencyError
from ..fs import atomic_write
from . import measure, quant, report, setups
from .config import BenchConfig
from .scale import scale_table


def model_argv(args, cfg: BenchConfig) -> list[str]:
    """The command-line options that rebuild this model shape in a child process."""
    argv = [f"--{f.name.replace('_', '-')}={getattr(cfg, f.name)}" for f in dataclasses.fields(BenchConfig)]
    return argv + [f"--threads={args.threads}", f"--rss-steps={args.rss_steps}"] + ([f"--quant={args.quant}"] if args.quant else [])


def _rss_child(args, cfg) -> int:
    model = setups.make(args.rss_child, setups.build_base(cfg, args.quant), cfg)
    step = measure.stepper(model, setups.trainable(model), setups.batch(cfg))
    for _ in range(args.rss_steps):
        step()
    print(json.dumps({"peak_rss_mb": measure.peak_rss_mb()}))
    return 0


def methods_of(spec: str | None, quant: str | None = None) -> list[str]:
    """A --methods list (None: every setup, or QUANT_METHODS with --quant), checked: known names, the
    frozen baseline among them, PEFT installed if needed."""
    if spec is None:
        spec = ",".join(setups.QUANT_METHODS if quant else setups.SETUPS)
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    if "frozen" not in methods or any(m not in setups.SETUPS for m in methods):
        raise ConfigError(f"--methods must include 'frozen' and only use {list(setups.SETUPS)}; got {methods}")
    if quant and any(not setups.SETUPS[m].on_quantized for m in methods):
        raise ConfigError(f"--quant: {[m for m in methods if not setups.SETUPS[m].on_quantized]} do not run on a "
                          f"quantized base (bone.flash leaves quantized PEFT layers to PEFT); leave them out of --methods")
    need_peft = [m for m in methods if setups.SETUPS[m].needs_peft]
    if need_peft and importlib.util.find_spec("peft") is None:
        raise MissingDependencyError(f"{', '.join(need_peft)} need PEFT (pip install 'peft>=0.17'), "
                                     "or leave them out of --methods")
    return methods


def run(args, cfg: BenchConfig, methods: list[str], rss: bool = True) -> dict:
    """Measure every method in `methods`; returns the JSON-ready result."""
    rss_mb = {m: measure.child_peak_rss(m, model_argv(args, cfg)) if rss and args.rss_steps else None for m in methods}
    base, ids = setups.build_base(cfg, args.quant), setups.batch(cfg)
    models = {m: setups.make(m, base, cfg) for m in methods}
    kept = {m: measure.kept_bytes(models[m], ids) for m in methods}
    steps = {m: measure.stepper(models[m], setups.trainable(models[m]), ids) for m in methods}
    times, cpu = measure.time_interleaved(steps, args.repeats, args.warmup)
    t0, c0 = median(times["frozen"]), median(cpu["frozen"])
    rows = {m: {"about": setups.SETUPS[m].about, "trainable": sum(p.numel() for p in setups.trainable(models[m])),
                "step_s": median(times[m]), "step_ratio": median(times[m]) / t0,
                "cpu_s": median(cpu[m]), "cpu_ratio": median(cpu[m]) / c0,
                "step_times_s": times[m], "cpu_times_s": cpu[m], "kept_bytes": kept[m],
                "extra_kept_bytes": kept[m] - kept["frozen"], "peak_rss_mb": rss_mb[m]} for m in methods}
    return {"config": dataclasses.asdict(cfg), "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "load_average": measure.load_average(), "quant": args.quant, "rows": rows, "targets": targets(rows),
            "weight_bytes": quant.weight_bytes(base) if args.quant else None}


def targets(rows: dict) -> dict:
    """Flash-Bone against PEFT MiSS and the frozen base, as measured ratios, each key with the bound
    Flash-Bone was built to meet (None where a method was not run)."""
    def ratio(a, b, key):
        return rows[a][key] / rows[b][key] if a in rows and b in rows and rows[b][key] else None
    return {"col step / peft-bat step (<= 0.95; --quant <= 0.9)": ratio("bone-col", "peft-bat", "step_s"),
            "col step / peft-lora step (QLoRA with --quant)": ratio("bone-col", "peft-lora", "step_s"),
            "col extra kept / peft-bat extra kept (<= 0.25)": ratio("bone-col", "peft-bat", "extra_kept_bytes"),
            "shard step / peft-shard step (<= 1)": ratio("bone-shard", "peft-shard", "step_s"),
            "peft-bat+flash step / peft-bat step (<= 1)": ratio("peft-bat+flash", "peft-bat", "step_s"),
            "peft-bat+flash extra kept / bone-col extra kept (~1)": ratio("peft-bat+flash", "bone-col", "extra_kept_bytes"),
            "peft-shard+flash step / peft-shard step (<= 1)": ratio("peft-shard+flash", "peft-shard", "step_s"),
            "shard step / frozen step (<= 1.05; small shape <= 1.07)": ratio("bone-shard", "frozen", "step_s"),
            "col CPU time / peft-bat CPU time": ratio("bone-col", "peft-bat", "cpu_s"),
            "shard CPU time / peft-shard CPU time": ratio("bone-shard", "peft-shard", "cpu_s"),
            "shard CPU time / frozen CPU time": ratio("bone-shard", "frozen", "cpu_s")}


def title(cfg: BenchConfig, args) -> str:
    base = f"{args.quant} " if args.quant else ""
    return (f"{base}Llama {cfg.layers}x{cfg.hidden} (mlp {cfg.intermediate}, vocab {cfg.vocab}), batch {cfg.batch}x{cfg.seq}, "
            f"r={cfg.r}, fp32, {args.threads} threads, median of {args.repeats}")


def main(args, cfg: BenchConfig) -> int:
    if args.rss_child:
        return _rss_child(args, cfg)
    result = run(args, cfg, methods_of(args.methods, args.quant))
    md = report.table(result["rows"])
    wb = result["weight_bytes"]
    if wb:
        md += (f"\n\n{wb['layers']} quantized projections: {wb['quantized_bytes'] / report.MIB:.2f} MiB "
               f"({args.quant}, codes + state) vs {wb['bf16_bytes'] / report.MIB:.2f} MiB in bf16: {wb['ratio']:.3f}x")
    tg = "\n".join(f"- {k}: {'-' if v is None else f'{v:.3f}'}" for k, v in result["targets"].items())
    head = f"{title(cfg, args)}, load average {result['load_average']:.1f}"
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(args.out / "bench.json", result)
    report.write_png(args.out / "bench.png", result["rows"], head, {m: setups.SETUPS[m].color for m in result["rows"]})
    text = f"{head}\n\n{md}\n\nFlash-Bone vs PEFT MiSS and the frozen base (bound in brackets):\n{tg}\n\n{scale_table()}\n"
    atomic_write(args.out / "bench.md", lambda tmp: Path(tmp).write_text(text))
    print(text)
    print(f"wrote {args.out}/bench.json, bench.png, bench.md")
    return 0
