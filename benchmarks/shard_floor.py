"""Where shard's training step goes at `bone bench --shape small` (issue 16, item 2): bone shard
next to two lower bounds built from the same model, interleaved in one process.

    PYTHONPATH=src python benchmarks/shard_floor.py --threads 2 --repeats 15 [--json out.json]

  frozen       the frozen base (dL/dx through every layer): the 1.00 of every ratio
  floor        what shard cannot avoid and nothing more: the frozen products, the slice sums s,
               dM = s^T g, one autograd function a projection, fused AdamW over the blocks. The
               adapter's share of y and dx is left out, so this model computes WRONG outputs: it
               is a bound to measure against, never a way to train
  floor+fold   floor with an exact forward (W + dW folded once a step, as keep_merged does);
               backward as floor
  shard-keep   bone shard with keep_merged=True (one fold a step; W + dW kept for backward)
  shard        bone shard as configured by default (fold in forward and again in backward, or the
               products where `bone.kernels.folds` says they cost less)

Every model is a fresh copy of `bone.bench`'s base for --shape small (Llama 512 / MLP 1536 / 4
layers / vocab 4096, batch 2 x 256, r=64, fp32) stepped by `bone.bench.measure.stepper`. The gap
floor+fold - floor is one fold; shard - floor is what folding or the products cost on this machine.
Prints a markdown table (median step time and process CPU time, each over the frozen base's).
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch.autograd import Function

from bone.bench import measure, setups
from bone.bench.config import SHAPES, BenchConfig
from bone.kernels.slices import slice_sum, tiled_plus
from bone.layer import BoneAdapter


class BoundFn(Function):
    """The floor of a shard projection (see the module docstring): y = x W^T + bias (fold: x (W + dW)^T
    + bias), dx = g W, dM = s^T g. Not shard's gradient: only a cost to measure."""

    @staticmethod
    def forward(ctx, x, w, bias, block, fold: bool):
        r, in_ = block.shape[0], x.shape[-1]
        s = slice_sum(x.reshape(-1, in_), r, block.dtype)  # (T, r)
        ctx.save_for_backward(w, s)
        return F.linear(x, tiled_plus(w, block.t().contiguous()) if fold else w, bias)

    @staticmethod
    def backward(ctx, g):
        w, s = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])  # (T, out)
        return (g2 @ w).view(*g.shape[:-1], w.shape[1]), None, None, s.t() @ g2, None


def bound(fold: bool):
    def fn(x, w, bias, block, dropout=None):
        return BoundFn.apply(x, w, bias, block, fold)
    return fn


def models(cfg: BenchConfig) -> dict:
    base = setups.build_base(cfg)
    out = {"frozen": setups.make("frozen", base, cfg)}
    for name, fold in (("floor", False), ("floor+fold", True)):
        model = setups.make("bone-shard", base, cfg)
        for module in model.modules():
            if isinstance(module, BoneAdapter):
                module.fn = bound(fold)
        out[name] = model
    out["shard-keep"] = setups.make("bone-shard-keep", base, cfg)
    out["shard"] = setups.make("bone-shard", base, cfg)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", help="also write the per-round times here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = BenchConfig(**SHAPES["small"])
    ids = setups.batch(cfg)
    steps = {name: measure.stepper(m, setups.trainable(m), ids) for name, m in models(cfg).items()}
    wall, cpu = measure.time_interleaved(steps, args.repeats, args.warmup)
    w0, c0 = statistics.median(wall["frozen"]), statistics.median(cpu["frozen"])
    print(f"--shape small, {args.threads} threads, median of {args.repeats}, load average {measure.load_average():.1f}\n")
    print("| model | step (s) | step / frozen | CPU / frozen |\n|---|---:|---:|---:|")
    for name in steps:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"| {name} | {w:.3f} | {w / w0:.3f} | {c / c0:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "wall": wall, "cpu": cpu}, f, indent=1)


if __name__ == "__main__":
    main()
