"""Bone col vs PEFT MiSS bat on the same bitsandbytes 4-bit layer (issue 13): bytes kept for backward
and training-step time, measured side by side in one process.

  bone col     bone.apply (Flash-Bone ColFn: W dequantized one chunk of output rows at a time, in
               forward and again in backward; saves x and the block)
  peft bat     PEFT MiSS init_weights="bat" (dequantizes and clones the whole weight every step)
  frozen       the Linear4bit itself, x requiring grad (the floor: bitsandbytes' own forward + dx)

A step is forward, sum-of-squares loss, backward and (bone/peft) an AdamW step on the block; the
setups run round-robin and the median of `--repeats` is reported, with the ratio to peft bat.
Kept bytes: every tensor autograd saves during one forward (torch saved_tensors_hooks), unique
storages, minus the input x and the layer's own parameters and quantization state (so every row
includes the loss's saved output, T x out fp32).

Usage: python benchmarks/quant_col.py [--out 4096] [--in 4096] [--tokens 256] [--r 64] [--quant nf4]
       [--threads N] [--repeats 5]   (prints a markdown table)
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


class Holder(nn.Module):
    def __init__(self, fc: nn.Module):
        super().__init__()
        self.fc = fc

    def forward(self, x):
        return self.fc(x)


def quantized_layer(out: int, in_: int, quant: str, seed: int = 0) -> nn.Module:
    import bitsandbytes as bnb

    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(in_, out, bias=False)
    lin.weight.data = torch.randn(out, in_, generator=g) / in_ ** 0.5
    q = bnb.nn.Linear4bit(in_, out, bias=False, compute_dtype=torch.float32, compress_statistics=True, quant_type=quant)
    q.load_state_dict(lin.state_dict())
    q = q.to("cpu")
    q.support_avx512bf16_for_cpu = False  # no CPU inference repacking (bone does the same)
    return q


def own_storages(module: nn.Module) -> set[int]:
    ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    for m in module.modules():
        qs = getattr(getattr(m, "weight", None), "quant_state", None)
        if qs is not None:
            ptrs |= {t.untyped_storage().data_ptr() for t in (qs.absmax, qs.code)}
            if qs.nested:
                ptrs |= {t.untyped_storage().data_ptr() for t in (qs.state2.absmax, qs.state2.code, qs.offset)}
    return ptrs


def kept_bytes(model: nn.Module, x: torch.Tensor) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).pow(2).sum()
    del loss
    mine = own_storages(model)
    return sum(n for p, n in seen.items() if p not in mine and p != x.untyped_storage().data_ptr())


def stepper(model: nn.Module, x: torch.Tensor):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None

    def step():
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        model(x).pow(2).sum().backward()
        if opt is not None:
            opt.step()

    return step


def setups(args):
    import peft

    import bone

    bone_model = bone.apply(Holder(quantized_layer(args.out, args.in_, args.quant)),
                            bone.BoneConfig(r=args.r, variant="col", target_modules=["fc"]))
    peft_model = peft.get_peft_model(Holder(quantized_layer(args.out, args.in_, args.quant)),
                                     peft.MissConfig(r=args.r, init_weights="bat", target_modules=["fc"]))
    g = torch.Generator().manual_seed(1)
    block = torch.randn(args.out // args.r, args.r, args.r, generator=g) * 0.02
    with torch.no_grad():
        bone_model.fc.bone_block.copy_(block)
        next(p for n, p in peft_model.named_parameters() if "miss_block" in n).copy_(block)
    frozen = Holder(quantized_layer(args.out, args.in_, args.quant))
    return {"bone col": bone_model, "peft bat": peft_model, "frozen": frozen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=int, default=4096)
    ap.add_argument("--in", dest="in_", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--r", type=int, default=64)
    ap.add_argument("--quant", choices=["nf4", "fp4"], default="nf4")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = setups(args)
    x = torch.randn(1, args.tokens, args.in_, generator=torch.Generator().manual_seed(2))
    xg = x.clone().requires_grad_()  # the frozen floor needs some gradient to compute
    with torch.no_grad():
        diff = (models["bone col"](x) - models["peft bat"](x)).abs().max().item()
    inputs = {name: (xg if name == "frozen" else x) for name in models}
    kept = {name: kept_bytes(m.train(), inputs[name]) for name, m in models.items()}
    steps = {name: stepper(m, inputs[name]) for name, m in models.items()}
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    weight_mib = args.out * args.in_ * 4 / 2**20
    print(f"{args.quant} layer {args.out}x{args.in_}, r={args.r}, T={args.tokens}, threads={torch.get_num_threads()}, "
          f"median of {args.repeats} (fp32 weight = {weight_mib:.0f} MiB; bone col vs peft bat max |y diff| = {diff:.1e})")
    print(f"(kept = saved for backward beyond x and the layer's own storage; includes the loss's saved output, "
          f"{args.tokens * args.out * 4 / 2**20:.1f} MiB)")
    print("| setup | step ms | vs peft bat | kept for backward MiB |")
    print("|---|---|---|---|")
    for name in models:
        print(f"| {name} | {med[name] * 1e3:.0f} | {med[name] / med['peft bat']:.2f}x | {kept[name] / 2**20:.1f} |")


if __name__ == "__main__":
    main()
