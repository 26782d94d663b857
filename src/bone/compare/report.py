"""The report of a comparison: compare.json (everything), compare.md (the table and what the protocol
does and does not control for), compare.png (loss curves at each arm's picked learning rate, test
accuracy bars with their intervals) and the closing line `bone compare` prints last (the ranking
and which differences to the reference are significant).
"""
from __future__ import annotations

from pathlib import Path

from .. import fs
from .plan import Plan

JSON, MARKDOWN, PICTURE = "compare.json", "compare.md", "compare.png"


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f} MiB"


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def _versus(v: dict | None) -> str:
    if v is None:
        return "reference"
    return f"{_signed(v['diff'])} [{_signed(v['low'])}, {_signed(v['high'])}]" + (" significant" if v["significant"] else "")


def table(summary: dict) -> list[str]:
    """The main table as Markdown rows (also what the command prints)."""
    ref, level = summary["reference"], round(summary["confidence"] * 100)
    n = len(summary["seeds"])
    head = (f"| arm | method | trainable | lr | test accuracy (mean ± sd, {n} seed{'s' * (n > 1)}) | {level}% interval | "
            f"vs {ref} ({level}% paired interval) | final train loss | s/step | peak memory |")
    rows = [head, "|" + "---|" * 10]
    for arm in summary["ranking"]:
        a = summary["arms"][arm]
        t = a["test"]
        sps = "n/a" if a["seconds_per_step"] is None else f"{a['seconds_per_step']:.2f}"
        rows.append(f"| {arm} | {a['label']} | {a['trainable']:,} | {a['lr']:g} | {t['mean']:.3f} ± {t['std']:.3f} | "
                    f"[{t['low']:.3f}, {t['high']:.3f}] | {_versus(a['versus_reference'])} | "
                    f"{a['final_loss']['mean']:.4f} | {sps} | {_mib(a['peak_memory_bytes'])} |")
    return rows


def closing_line(summary: dict) -> str:
    """The ranking by test accuracy and, for every other arm, its difference to the reference."""
    ref, arms = summary["reference"], summary["arms"]
    shown = [(a, f"{arms[a]['test']['mean']:.3f}") for a in summary["ranking"]]  # best first; equal as shown: "="
    ranking = f"{shown[0][0]} {shown[0][1]}" + "".join(
        f" {'=' if m == prev else '>'} {a} {m}" for (_, prev), (a, m) in zip(shown, shown[1:]))
    parts = []
    for arm in summary["ranking"]:
        v = arms[arm]["versus_reference"]
        if v is not None:
            verdict = "significant" if v["significant"] else "not significant"
            parts.append(f"{arm} {_signed(v['diff'])} [{_signed(v['low'])}, {_signed(v['high'])}] {verdict}")
    level = round(summary["confidence"] * 100)
    return (f"ranking (test accuracy at each arm's validation-picked lr): {ranking}; vs {ref} "
            f"({level}% paired bootstrap): " + ("; ".join(parts) if parts else "no other arm"))


def edge_note(summary: dict) -> str | None:
    """Which arms picked the lowest or highest rate of their list (their best rate may lie beyond it)."""
    ends = {end: [a for a, v in summary["arms"].items() if v.get("lr_at_edge") == end] for end in ("lowest", "highest")}
    said = [f"{', '.join(arms)} picked the {end} learning rate of {'its' if len(arms) == 1 else 'their'} list"
            for end, arms in ends.items() if arms]
    if not said:
        return None
    return ("; ".join(said) + ": the best rate may lie beyond the list, and a wider grid may raise the accuracy; "
            "add rates past it (in a new output_dir) to find out")


def _validation_table(summary: dict) -> list[str]:
    lrs = sorted({lr for a in summary["arms"].values() for lr in a["validation"]}, key=float)
    if not lrs:
        return ["One learning rate per arm: nothing was picked, and no validation split was read."]
    rows = ["| arm | " + " | ".join(f"lr {lr}" for lr in lrs) + " |", "|" + "---|" * (len(lrs) + 1)]
    for arm, a in summary["arms"].items():
        cells = []
        for lr in lrs:
            v = a["validation"].get(lr)
            cell = "" if v is None else f"{v['mean']:.3f}"
            cells.append(f"**{cell}**" if v is not None and float(lr) == a["lr"] else cell)
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    return rows


def _protocol(plan: Plan, summary: dict) -> list[str]:
    cfg, t, d = plan.cfg, plan.cfg.train, summary["data"]
    s = t.schedule
    budget = f"{s.max_steps} optimizer steps" if s.max_steps else f"{s.epochs} epoch(s)"
    picked = (f"each arm's learning rate picked on {d['validation']} validation records ({d['validation_source']}), "
              f"disjoint from the test records, by mean validation accuracy over the seeds (ties: lower final training "
              f"loss); the test split is read only at the picked rate" if cfg.needs_validation
              else "one learning rate per arm (nothing picked)")
    return [
        "## What this comparison controls for",
        "",
        f"- The same base model ({t.model.path}), training data ({t.data.train}, {d['train']} examples used at most), "
        f"template ({t.data.template}), max length ({t.data.max_length}) and token budget for every arm: {budget} of "
        f"{s.batch_size * s.grad_accum} examples per process, in the same order for a given seed (the seed fixes the "
        f"data order, so seed s gives every arm the same batches).",
        f"- The same recipe: one training loop (bone train), AdamW, {s.scheduler} schedule with {s.warmup_steps} warmup "
        f"steps, gradient clipping at {t.optim.max_grad_norm}, {s.precision} precision, the loss averaged over the "
        f"supervised tokens of each global batch.",
        f"- Learning rates: {picked}.",
        f"- Trainable parameters matched to the reference within {cfg.param_tolerance:.0%} (LoRA-type ranks from "
        f"lora.r: auto)" + (f", except {cfg.allow_unmatched} (allowed to differ)" if cfg.allow_unmatched else "") + ".",
        f"- The same {summary['test_items']} test items ({d['test_source']}) for every arm, greedy decoding with the same "
        f"budget ({t.eval.max_new_tokens} new tokens); differences are paired by item and by seed, with a percentile "
        f"bootstrap over items and seeds ({cfg.bootstrap} resamples, seed {cfg.stats_seed}).",
        f"- Overlap with the training data: {d['test_in_train']} test prompt(s)"
        + (f", {d['validation_in_train']} validation prompt(s)" if "validation_in_train" in d else "") + ".",
        "",
        "## What it does not control for",
        "",
        "- Only the learning rate is tuned, on a short list; everything else (schedule, steps, batch, LoRA alpha and "
        "dropout, Bone block size) is shared and may suit some arms better than others.",
        f"- {len(cfg.seeds)} seed(s): the spread over seeds is a rough estimate, and the interval's seed resampling "
        f"can only draw from these seeds.",
        "- One model, one task and one training budget: a ranking here need not hold for other models, data, scales "
        "or longer training (the paper's numbers are LLaMA2-7B on MetaMathQA, one epoch of 395k examples).",
        "- Accuracy is exact match of the final number; nothing else about the answers is judged.",
        "- Seconds per step and peak memory are measured in this process on this machine (other programs sharing it "
        "slow every arm); seconds include checkpoint writes, peak memory is what a training session added, the "
        f"median over the arm's sessions ({summary['arms'][cfg.reference]['memory_kind'] or 'not measured'}).",
    ]


def markdown(plan: Plan, summary: dict, command: str) -> str:
    base, edge = summary["base_accuracy"], edge_note(summary)
    lines = [
        f"# bone compare: {', '.join(plan.cfg.methods)} on {plan.cfg.train.model.path}",
        "",
        f"Command: `{command}`",
        "",
        *table(summary),
        "",
        *([f"The base model, untrained, scores {base:.3f} on the same test items.", ""] if base is not None else []),
        f"![loss curves and accuracies]({PICTURE})",
        "",
        closing_line(summary),
        "",
        "## Validation accuracy per learning rate (mean over seeds; the picked one in bold)",
        "",
        *_validation_table(summary),
        "",
        *([edge, ""] if edge else []),
        *_protocol(plan, summary),
        "",
    ]
    return "\n".join(lines)


def picture(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms, ref = summary["arms"], summary["reference"]
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    for arm, a in arms.items():
        steps = [s for s, _ in a["loss_curve"]]
        losses = [v for _, v in a["loss_curve"]]
        window = max(1, len(losses) // 20)
        smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
                  for i in range(len(losses))]
        curves.plot(steps, smooth, label=f"{arm} (lr {a['lr']:g})")
    curves.set_xlabel("optimizer step")
    curves.set_ylabel("training loss (mean over seeds, smoothed)")
    curves.grid(alpha=0.3)
    curves.legend()
    order = summary["ranking"]
    means = [arms[a]["test"]["mean"] for a in order]
    errors = [[m - arms[a]["test"]["low"] for a, m in zip(order, means)],
              [arms[a]["test"]["high"] - m for a, m in zip(order, means)]]
    colors = ["tab:red" if a == ref else "tab:blue" for a in order]
    bars.bar(order, means, yerr=errors, capsize=6, color=colors)
    if summary["base_accuracy"] is not None:
        bars.axhline(summary["base_accuracy"], color="gray", linestyle="--", label="base model")
        bars.legend()
    bars.set_ylabel(f"test accuracy ({round(summary['confidence'] * 100)}% interval)")
    bars.set_ylim(0, 1)
    bars.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        fs.atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def write(plan: Plan, summary: dict, command: str) -> list[Path]:
    """compare.json, compare.md and compare.png in the grid folder; returns their paths."""
    root = plan.cfg.root
    fs.write_json(root / JSON, {**summary, "command": command})
    fs.write_text(root / MARKDOWN, markdown(plan, summary, command))
    picture(summary, root / PICTURE)
    return [root / MARKDOWN, root / JSON, root / PICTURE]
