"""Running a comparison grid: every cell an ordinary `bone train` run, skipped when finished and
resumed from its newest checkpoint when interrupted; then the test evaluation of the picked runs.

Runs go through `bone.train.Trainer` in this process (not a subprocess per run): the same code
path as `bone train`, one import of torch for the whole grid, and it works unchanged under
`accelerate launch -m bone compare ...`, where every process steps through the grid together.
A kill at any moment loses at most the steps since the run's last checkpoint (`checkpointing.every`);
SIGINT / SIGTERM save a checkpoint first. Each training session appends one line to the run's
`timing.jsonl` (RunDir.timing): optimizer steps, seconds in `Trainer.train` (checkpoint writes
included, setup and evaluation not) and the peak memory the session added (`PeakMemory`).
"""
from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path

from .. import fs
from ..train.rundir import RunDir
from .config import lr_name, run_folder
from .plan import GRID_CONFIG, Cell, Plan

TEST = "test"  # RunDir.eval tag of the test-split evaluation
BASE = "base"  # folder (under the grid) of the untrained base model's evaluation


class PeakMemory:
    """Peak memory a session adds: on CUDA, torch's peak allocation above the allocation at `start`;
    on a CPU, the process's peak resident set (VmHWM, reset at `start` through /proc/self/clear_refs)
    above its resident set at `start`. None where neither can be read."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.kind = "cuda-allocated" if self.cuda else "cpu-rss"
        self.base: int | None = None

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def start(self) -> None:
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # peak resident set := current
        except OSError:
            self.base = None
            return
        self.base = self._status("VmRSS")

    def peak(self) -> int | None:
        import torch

        if self.base is None:
            return None
        top = torch.cuda.max_memory_allocated() if self.cuda else self._status("VmHWM")
        return None if top is None else max(0, top - self.base)


def status(folder: Path, needs_validation: bool) -> str:
    """"done" (trained and evaluated), "resume" (has a checkpoint), "restart" (a run folder that died
    before its first checkpoint) or "new"."""
    run = RunDir(folder)
    if run.adapter.is_dir() and (not needs_validation or (run.eval("after") / "results.json").is_file()):
        return "done"
    if run.latest() is not None:
        return "resume"
    return "restart" if not run.is_empty() else "new"


def is_main() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def barrier() -> None:
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def _record(run: RunDir, session: dict) -> None:
    old = run.timing.read_text() if run.timing.is_file() else ""
    fs.write_text(run.timing, old + json.dumps(session) + "\n")


def run_cell(plan: Plan, index: int, cell: Cell) -> int:
    """Train (or resume, or skip) one cell and evaluate it on the validation split; returns 0, or the
    trainer's exit status when a signal stopped it."""
    from ..train.trainer import Trainer

    cfg, where = plan.cfg, status(cell.folder, plan.cfg.needs_validation)
    name = f"[{index + 1}/{len(plan.cells)}] {cell.arm} lr {lr_name(cell.lr)} seed {cell.seed}"
    if where == "done":
        print(f"{name}: finished earlier, skipped", flush=True)
        return 0
    print(f"{name}: {'resuming' if where == 'resume' else 'training'} in {cell.folder}", flush=True)
    memory = PeakMemory()
    memory.start()
    trainer = Trainer(cell.config, resume="latest" if where == "resume" else None, overwrite=where == "restart").setup()
    first = trainer.step
    started = time.perf_counter()
    code = trainer.train()
    seconds = time.perf_counter() - started
    if trainer.is_main:
        _record(trainer.run_dir, {"steps": trainer.step - first, "seconds": seconds, "peak_bytes": memory.peak(),
                                  "memory": memory.kind, "device": str(trainer.acc.device)})
    if code != 0:
        return code
    if cfg.needs_validation:
        trainer.evaluate("after")
    if trainer.is_main and not cfg.keep_checkpoints:
        shutil.rmtree(trainer.run_dir.checkpoints, ignore_errors=True)
    trainer.acc.wait_for_everyone()
    del trainer
    gc.collect()
    return 0


def evaluate_test(plan: Plan, adapter: Path | None, out: Path, tokenizer) -> None:
    """Accuracy on the test records of the base model, with the result saved at `adapter` when given,
    written to `out` (results.json, predictions.jsonl in the order of the records)."""
    import torch
    from accelerate import PartialState

    from ..config import to_torch_dtype
    from ..eval import eval_data, evaluate, write_results
    from ..methods import owner
    from ..models import load_model

    t = plan.cfg.train
    model = load_model(t.model.path, dtype=to_torch_dtype(t.model.dtype))
    if adapter is not None:
        method = owner(adapter)
        model = method.load(model, adapter)
        method.fold(model)
    model.to(PartialState().device).eval()
    data = eval_data(plan.test_records, tokenizer, metric="accuracy", template=t.data.template,
                     fields=t.data.fields(held_out=True), source="test data")
    with torch.no_grad():
        metrics, predictions = evaluate(model, tokenizer, data, metric="accuracy", template=t.data.template,
                                        batch_size=t.eval.batch_size, max_new_tokens=t.eval.max_new_tokens)
    write_results(out, metrics, predictions)
    print(f"test accuracy {metrics['accuracy']:.4f} ({metrics['correct']}/{metrics['n']}): {out}", flush=True)


def run_tests(plan: Plan, picked: dict[str, float]) -> None:
    """Evaluate on the test split every seed of each arm at its picked learning rate (and the base
    model when asked), unless done before; main process only."""
    from ..models import load_tokenizer

    cfg, tokenizer = plan.cfg, None
    todo = [(RunDir(run_folder(cfg, arm, picked[arm], seed)).adapter, RunDir(run_folder(cfg, arm, picked[arm], seed)).eval(TEST))
            for arm in cfg.methods for seed in cfg.seeds]
    if cfg.test.base:
        todo.insert(0, (None, RunDir(cfg.root / BASE).eval(TEST)))
    for adapter, out in todo:
        if (out / "results.json").is_file():
            continue
        tokenizer = tokenizer or load_tokenizer(cfg.train.model.tokenizer or cfg.train.model.path)
        print(f"test split: {'the base model' if adapter is None else adapter}", flush=True)
        evaluate_test(plan, adapter, out, tokenizer)


def run_grid(plan: Plan) -> int:
    """Every cell in order (seed by seed, arm by arm, rate by rate); returns 0 when all are finished, or
    the exit status of the run a signal stopped (its checkpoint continues it on the next call)."""
    from ..options import render_yaml

    cfg = plan.cfg
    if is_main():
        cfg.root.mkdir(parents=True, exist_ok=True)
        fs.write_text(cfg.root / GRID_CONFIG, render_yaml(cfg) + "\n")
    barrier()
    for i, cell in enumerate(plan.cells):
        code = run_cell(plan, i, cell)
        if code != 0:
            return code
    return 0
