"""What a run reports: a tqdm progress bar, metrics.jsonl, TensorBoard (when installed), loss.png."""
from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm.auto import tqdm

from .. import fs
from .rundir import RunDir


class Monitor:
    """Main-process reporting. `log(step, metrics)` appends one JSON line per call."""

    def __init__(self, run: RunDir, total_steps: int, start_step: int, *, progress: bool, tensorboard: bool):
        self.path, self.tb_dir = run.metrics, run.tensorboard
        if start_step == 0 and self.path.exists():
            self.path.unlink()
        elif start_step > 0:
            self._truncate_after(start_step)
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:  # a resumed run hides the events logged after its checkpoint
                self.tb = SummaryWriter(str(run.tensorboard), purge_step=start_step + 1 if start_step else None)

    def _truncate_after(self, step: int) -> None:
        """A resumed run drops the lines logged after its checkpoint (they will be logged again)."""
        if not self.path.exists():
            return
        lines = [ln for ln in self.path.read_text().splitlines() if ln]
        kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= step]
        if len(kept) < len(lines):
            fs.write_text(self.path, "".join(ln + "\n" for ln in kept))

    def log(self, step: int, metrics: dict) -> None:
        """One JSON line (a NaN or inf value is written as null), appended whole or not at all."""
        row = {"step": step, **{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}}
        fs.append_text(self.path, json.dumps(row, allow_nan=False) + "\n")
        if self.tb is not None:
            with fs.naming(self.tb_dir):  # its writer thread's failure (a full disk) names no file
                for k, v in row.items():
                    if isinstance(v, (int, float)) and k != "step":
                        self.tb.add_scalar(k, v, step)

    def advance(self, loss: float, lr: float, tokens_per_s: float) -> None:
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        self.bar.update(1)

    def close(self) -> OSError | None:
        """Close the bar and TensorBoard's writer; returns the error of its last writes (a full disk)."""
        self.bar.close()
        try:
            with fs.naming(self.tb_dir):
                if self.tb is not None:
                    self.tb.close()
        except OSError as err:
            return err
        return None


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def plot_loss(metrics_path: Path, out_png: Path) -> Path | None:
    """loss.png: training loss per step (and its running mean); None when there is nothing to plot."""
    rows = [r for r in read_metrics(metrics_path) if "loss" in r and math.isfinite(r["loss"])]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
    window = max(1, len(losses) // 20)
    smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, alpha=0.35, label="loss")
    ax.plot(steps, smooth, label=f"mean of last {window}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (per supervised token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fs.atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
    return out_png
