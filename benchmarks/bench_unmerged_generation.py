"""Greedy generation with unmerged Bone adapters vs the merged model (the inference cache,
BoneConfig.cache_merged), on the embedded SmolLM2-135M-Instruct, side by side in one process.

    python benchmarks/bench_unmerged_generation.py --threads 2 --repeats 3 [--json out.json]

Each variant (col, row, shard, mini) is applied with r=64 to all seven projections and given small
random blocks (the same blocks for every way of running it, so each way generates the same tokens).
Per round, in turn: the base model; then per variant the adapter unmerged without the cache
(cache_merged=False: W' rebuilt, or W + dW folded, on every forward), unmerged with the cache (the
default), and merged (`bone.merge`). Batch of the bundled arithmetic test problems (alpaca template,
as `bone eval` feeds them), greedy. Medians of wall and process-CPU time; ratios to the merged model.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch

VARIANTS = {"col": None, "row": None, "shard": None, "mini": 64}


def _set_cache(model, mode) -> None:
    from bone.inject import bone_layers

    for _, layer in bone_layers(model):
        for adapter in layer.bone_adapters.values():
            adapter.cfg = dataclasses.replace(adapter.cfg, cache_merged=mode)
            adapter.drop_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds (medians are reported)")
    ap.add_argument("--batch", type=int, default=20, help="prompts in the batch")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated per prompt")
    ap.add_argument("--r", type=int, default=64, help="Bone block size")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--json", default=None, help="also write the medians and every round's times to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import bone
    from bone.fs import write_json
    from bone.data import arith
    from bone.generation import GenerationConfig, generate_ids, prompt_format

    tok = bone.load_tokenizer("smollm2-135m")
    fmt = prompt_format(tok, "alpaca")
    rows = [fmt.prompt_ids([{"role": "user", "content": r["question"]}]) for r in arith.generate(args.batch, split="test")]
    cfg = GenerationConfig(max_new_tokens=args.new_tokens)

    def gen(model):
        return [c.token_ids for c in generate_ids(model, tok, rows, cfg, batch_size=len(rows))]

    base = bone.load_model("smollm2-135m").eval()
    runs = {"base": (base, None, None)}  # name -> (model, merged?, cache_merged)
    for name in args.variants.split(","):
        model = bone.apply(bone.load_model("smollm2-135m").eval(),
                           bone.BoneConfig(r=args.r, variant=name, mini_r=VARIANTS[name]))
        gen_ = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in bone.trainable_parameters(model):
                p.copy_(torch.randn(p.shape, generator=gen_) * 2e-3)
        runs[f"{name} unmerged, no cache"] = (model, False, False)
        runs[f"{name} unmerged, cached"] = (model, False, "auto")
        runs[f"{name} merged"] = (model, True, "auto")
    merged = {id(m): False for m, _, _ in runs.values()}
    wall = {k: [] for k in runs}
    cpu = {k: [] for k in runs}
    tokens = {}
    warm = GenerationConfig(max_new_tokens=2)
    for i in range(args.repeats):
        for name, (model, want_merged, cache) in runs.items():
            if want_merged is not None:
                if merged[id(model)] != want_merged:
                    (bone.merge if want_merged else bone.unmerge)(model)
                    merged[id(model)] = want_merged
                _set_cache(model, cache)
            generate_ids(model, tok, rows, warm, batch_size=len(rows))  # warm-up (builds the cache when on)
            t0, c0 = time.perf_counter(), time.process_time()
            out = gen(model)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            tokens[name] = out
            print(f"round {i + 1}: {name}: {wall[name][-1]:.2f} s wall, {cpu[name][-1]:.2f} s CPU", flush=True)
    load = os.getloadavg()[0]
    print(f"greedy generation, {len(rows)} prompts x up to {args.new_tokens} new tokens, r={args.r}, all seven "
          f"projections, {args.threads} thread(s), median of {args.repeats} rounds, load average {load:.1f}")
    print("| run | wall (s) | CPU (s) | wall / merged | CPU / merged | same tokens as merged |")
    print("|---|---:|---:|---:|---:|---|")
    for name in runs:
        variant = name.split()[0]
        ref = f"{variant} merged" if variant in VARIANTS else None
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        rw = "-" if ref is None else f"{w / statistics.median(wall[ref]):.2f}"
        rc = "-" if ref is None else f"{c / statistics.median(cpu[ref]):.2f}"
        same = "-" if ref is None else str(tokens[name] == tokens[ref])
        print(f"| {name} | {w:.2f} | {c:.2f} | {rw} | {rc} | {same} |")
    if args.json:
        rows = {name: {"wall_s": statistics.median(wall[name]), "cpu_s": statistics.median(cpu[name]),
                       "wall_times_s": wall[name], "cpu_times_s": cpu[name]} for name in runs}
        write_json(args.json, {"args": vars(args), "load_average": load, "rows": rows})


if __name__ == "__main__":
    main()
