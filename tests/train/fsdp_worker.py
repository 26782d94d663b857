"""Worker for test_fsdp.py: train the tiny Llama + Bone for some steps, sharded with FSDP2
(`fully_shard`, gloo) when launched by torchrun with 2+ processes, plain otherwise; save a
checkpoint (adapter + optimizer) through bone.train.sharded; optionally resume from one first.

    python fsdp_worker.py MODEL_DIR OUT_DIR --steps 4 [--first 2 --resume CKPT_DIR] [--parts norm --parts-lr 3e-4]

With --parts, bone.train_parts are trained too, in their own AdamW group (as bone train's optim.parts_lr).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from bone import BoneConfig, apply, parts, trainable_parameters
from bone.data import collate, load_records, to_examples, tokenize_examples
from bone.loss import next_token_loss, supervised_tokens
from bone.methods import get
from bone.models import load_model, load_tokenizer
from bone.train import sharded
from bone.train.sampler import BatchPlan

GLOBAL_BATCH = 4


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--resume", type=Path)
    ap.add_argument("--parts", nargs="*", default=None)
    ap.add_argument("--parts-lr", type=float, default=3e-4)
    a = ap.parse_args()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    torch.manual_seed(0)
    tok = load_tokenizer(a.model_dir)
    model = apply(load_model(a.model_dir, dtype=torch.float32), BoneConfig(r=8, variant="col", train_parts=a.parts))
    method = get("bone")  # what bone train's checkpoints call: trainable names, save, read_trained
    model.train()
    if world > 1:
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        assert sharded.is_sharded(model, method), "fully_shard left the adapter blocks unsharded"
    named, part_names = method.trainable(model), set(parts.names(model))
    groups = [{"params": [p for n, p in named if n not in part_names], "lr": 1e-3, "names": [n for n, _ in named if n not in part_names]}]
    if part_names:  # the trainer's layout: blocks, then parts, each group naming its parameters
        groups.append({"params": [p for n, p in named if n in part_names], "lr": a.parts_lr,
                       "names": [n for n, _ in named if n in part_names]})
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.0)
    if a.resume is not None:
        sharded.load_trained(model, method, a.resume / "adapter")
        sharded.load_optimizer_state(model, method, opt, torch.load(a.resume / "optimizer.pt", weights_only=True))
    data = tokenize_examples(to_examples(load_records("bundled:arith", limit=48)), tok, template="alpaca", max_length=128)
    plan = BatchPlan(len(data), GLOBAL_BATCH // world, 1, world, rank, seed=0)
    for step in range(a.first, a.steps):
        (idx,) = plan.micro_batches(0, step)
        batch = collate([data[i] for i in idx], tok.pad_token_id)
        local = supervised_tokens(batch["labels"]).float()
        supervised = local.clone()
        if world > 1:
            dist.all_reduce(supervised)
        # FSDP averages gradients over processes: scale by world so the step sees sum / global count
        (next_token_loss(model(input_ids=batch["input_ids"]).logits, batch["labels"], "sum") * world / supervised).backward()
        norm = torch.nn.utils.clip_grad_norm_(trainable_parameters(model), 0.05)  # DTensor norm when sharded
        if rank == 0:
            print(f"step {step + 1} grad_norm {float(sharded.full(norm)):.6e}", flush=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
    a.out.mkdir(parents=True, exist_ok=True)
    sharded.save_trained(model, method, a.out / "adapter", rank == 0)
    state = sharded.optimizer_state(model, method, opt)
    if rank == 0:
        torch.save(state, a.out / "optimizer.pt")
    if world > 1:
        dist.barrier()  # rank 0 has written everything before any process tears gloo down
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # torch 2.13 + gloo: ~1 in 10 two-process runs aborted in C++ teardown at interpreter exit
    # ("terminate called without an active exception", no Python frame) after all work was done;
    # leave without running those destructors
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
