"""When shard / mini should fold: one training step of a decoder layer's seven projections, per way of
running the adapter, against the frozen layers, over tokens per call T (the sweep behind
`bone.kernels.folds`).

    PYTHONPATH=src python benchmarks/shard_fold_sweep.py --threads 2 --repeats 6 [--json out.json]

For each shape (hidden / MLP / k-v width) and T, a pool of layers (about 20 MB of fp32 weights, so
they do not all sit in a core's cache) runs forward and backward (dL/dx and dL/dblock) through
`bone.kernels.ShardFn` with r=64:
  fold     W + dW folded in forward and again in backward
  keep     folded once, kept for backward (keep_merged=True)
  product  no fold: s M in forward, g M^T in backward
  mini_fold / mini_product   the same for mini (mini_r=64)
Per method the median wall-clock time over `--repeats` interleaved rounds (`bone.bench.measure.
time_interleaved`: every method once per round, after 2 untimed rounds), as a ratio to the frozen
layers (F.linear, dL/dx only). Prints one line per (shape, T).
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

from bone.bench.measure import time_interleaved
from bone.kernels import ShardFn

R = 64
SHAPES = [(512, 1536, 512), (576, 1536, 192), (1024, 2816, 1024)]  # hidden, MLP width, k/v width
POOL_BYTES = 20_000_000


def _layers(hidden: int, inter: int, kv: int, tokens: int) -> list[tuple]:
    """(W, M, Dm, x, g) for the seven projections of as many layers as fill POOL_BYTES (at least 2)."""
    shapes = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden), (inter, hidden), (inter, hidden), (hidden, inter)]
    per_layer = sum(o * i for o, i in shapes) * 4
    pool = []
    for _ in range(max(2, POOL_BYTES // per_layer)):
        for out, in_ in shapes:
            pool.append((torch.randn(out, in_) * 0.02, (torch.randn(R, out) * 0.01).requires_grad_(),
                         (torch.randn(R, 64) * 0.01).requires_grad_(),
                         torch.randn(tokens, in_, requires_grad=True), torch.randn(tokens, out)))
    return pool


def _methods(pool: list[tuple]) -> dict:
    def frozen():
        for w, _, _, x, g in pool:
            F.linear(x, w).backward(g)

    def shard(keep: bool, fold: bool, mini: bool = False):
        def run():
            for w, m, dm, x, g in pool:
                ShardFn.apply(x, w, None, dm if mini else m, 0.0, 4096, keep, fold).backward(g)
        return run

    return {"frozen": frozen, "fold": shard(False, True), "keep": shard(True, True), "product": shard(False, False),
            "mini_fold": shard(False, True, True), "mini_product": shard(False, False, True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=6, help="timed rounds, each running every method once (median)")
    ap.add_argument("--tokens", default="128,512,2048,4096", help="tokens per call, comma-separated")
    ap.add_argument("--json", default=None, help="also write the ratios to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for hidden, inter, kv in SHAPES:
        for tokens in [int(t) for t in args.tokens.split(",")]:
            methods = _methods(_layers(hidden, inter, kv, tokens))
            wall, _ = time_interleaved(methods, args.repeats, warmup=2)
            median = {name: statistics.median(times) for name, times in wall.items()}
            ratios = {name: median[name] / median["frozen"] for name in methods}
            rows.append({"hidden": hidden, "intermediate": inter, "kv": kv, "tokens": tokens, "ratios": ratios})
            print(f"h={hidden} i={inter} kv={kv} T={tokens} slices={hidden // R}: "
                  + " ".join(f"{k}={v:.3f}" for k, v in ratios.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "repeats": args.repeats, "r": R, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
