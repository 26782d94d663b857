"""Benchmark output: a markdown table, `bench.json` and `bench.png`, written atomically."""
from __future__ import annotations

import json
from pathlib import Path

from ..fs import atomic_write

MIB = 1024 ** 2


def table(rows: dict[str, dict]) -> str:
    """Markdown table of the per-method results (see `bench.run` for the row fields)."""
    head = ("| method | trainable | step (s, median) | step / frozen | CPU / frozen | kept for backward (MiB) "
            "| extra kept vs frozen (MiB) | peak RSS (MiB) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for name, r in rows.items():
        rss = "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}"
        lines.append(f"| {name} | {r['trainable']:,} | {r['step_s']:.3f} | {r['step_ratio']:.3f} | {r['cpu_ratio']:.3f} | "
                     f"{r['kept_bytes'] / MIB:.1f} | {r['extra_kept_bytes'] / MIB:.1f} | {rss} |")
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def write_png(path: Path, rows: dict[str, dict], title: str, colors: dict[str, str]) -> None:
    """Three bar charts: step time ratio, extra bytes kept for backward, peak RSS; `colors` per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    panels = [("step time / frozen base", [rows[n]["step_ratio"] for n in names]),
              ("extra kept for backward (MiB)", [rows[n]["extra_kept_bytes"] / MIB for n in names])]
    if all(rows[n].get("peak_rss_mb") is not None for n in names):
        panels.append(("peak RSS (MiB)", [rows[n]["peak_rss_mb"] for n in names]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.4 * len(names) + 1.5))
    for ax, (label, values) in zip(axes, panels):
        ax.barh(names, values, color=[colors[n] for n in names])
        ax.invert_yaxis()
        ax.set_xlabel(label)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}" if v < 10 else f" {v:.0f}", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
