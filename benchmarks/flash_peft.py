"""PEFT MiSS with and without `bone.flash`, next to bone's own layers: training step time and bytes
kept for backward, interleaved in one process (issue 12's probe shape by default).

  frozen              the base model (gradient to the input, nothing trained)
  peft-bat            PEFT MiSS init_weights="bat"      peft-bat+flash    the same after bone.flash
  bone-col            bone.apply col (Flash-Bone)
  peft-shard / peft-shard+flash / bone-shard, peft-mini / peft-mini+flash / bone-mini   likewise

Step time: one training step (forward, causal-LM loss, backward, AdamW), every method once per
round, `--repeats` timed rounds after `--warmup` (wall clock and process CPU time, medians).
Kept bytes: tensors autograd saves in one forward, parameters excluded (bone.bench.measure).
Each +flash model is checked to run Flash-Bone on every layer (tests/integrations check that
it equals PEFT). Usage: python benchmarks/flash_peft.py [--threads 2] [--repeats 5] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

import bone
from bone.bench.measure import kept_bytes, median, stepper, time_interleaved
from bone.bench.setups import BenchConfig, batch, build_base, make, trainable

GROUPS = {"bat": "col", "shard": "shard", "mini": "mini"}  # PEFT init name -> bone variant


def methods(base, cfg: BenchConfig) -> dict[str, torch.nn.Module]:
    models = {"frozen": make("frozen", base, cfg)}
    for peft_name, variant in GROUPS.items():
        plain = make(f"peft-{peft_name}", base, cfg)
        flashed = bone.flash(make(f"peft-{peft_name}", base, cfg))
        n = len(bone.integrations.flashed_layers(flashed))
        if n != 7 * cfg.layers:
            raise SystemExit(f"flash took {n} of {7 * cfg.layers} layers of peft-{peft_name}")
        models.update({f"peft-{peft_name}": plain, f"peft-{peft_name}+flash": flashed,
                       f"bone-{variant}": make(f"bone-{variant}", base, cfg)})
    return models


def table(rows: list[dict]) -> str:
    lines = ["| method | step s (wall) | x frozen | step s (CPU) | x frozen | kept MB | beyond frozen MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['wall_s']:.3f} | {r['wall_x']:.2f} | {r['cpu_s']:.3f} | {r['cpu_x']:.2f} "
                     f"| {r['kept_mb']:.1f} | {r['extra_mb']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--r", type=int, default=64)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = BenchConfig(hidden=a.hidden, intermediate=a.intermediate, layers=a.layers, heads=a.heads, vocab=a.vocab,
                      seq=a.seq, batch=a.batch, r=a.r, mini_r=a.r)
    cfg.check()
    ids = batch(cfg)
    models = methods(build_base(cfg), cfg)
    kept = {name: kept_bytes(m, ids) for name, m in models.items()}
    wall, cpu = time_interleaved({n: stepper(m, trainable(m), ids) for n, m in models.items()}, a.repeats, a.warmup)
    w0, c0 = median(wall["frozen"]), median(cpu["frozen"])
    rows = [{"method": n, "wall_s": median(wall[n]), "wall_x": median(wall[n]) / w0, "cpu_s": median(cpu[n]),
             "cpu_x": median(cpu[n]) / c0, "kept_mb": kept[n] / 1e6, "extra_mb": (kept[n] - kept["frozen"]) / 1e6}
            for n in models]
    print(f"shape: hidden {a.hidden}, MLP {a.intermediate}, {a.layers} layers, {a.heads} heads, vocab {a.vocab}, "
          f"batch {a.batch} x {a.seq}, r={a.r} (mini_r={a.r}), fp32, {a.threads} thread(s), {a.repeats} rounds\n")
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
