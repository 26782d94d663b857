"""`bone compare`: Bone against LoRA, PiSSA, DoRA and full fine-tuning on your model and data, fairly.

    config.py   CompareConfig (the grid: arms x learning rates x seeds, held-out data, statistics)
    plan.py     every check before any run, and the cells of the grid
    grid.py     running the cells (ordinary bone train runs: skip finished, resume interrupted) and
                the test evaluation of the picked runs
    results.py  reading a finished grid back, per arm (the learning rate picked on validation only)
    stats.py    learning-rate choice, spread over seeds, bootstrap intervals (paired by item and seed)
    report.py   compare.md, compare.json, compare.png and the closing line

`run(cfg)` does it all; rerunning it on the same folder continues where it stopped.
"""
from __future__ import annotations

from .config import CompareConfig, load_compare_config


def run(cfg: CompareConfig, command: str = "bone compare") -> int:
    """Check, run the grid, evaluate the picked runs on the test split and write the report; returns 0,
    or the exit status of a run a signal stopped (rerun to continue)."""
    from . import grid, report, results
    from .plan import make_plan

    plan = make_plan(cfg)
    code = grid.run_grid(plan)
    if code != 0 and grid.is_main():
        print(f"bone compare: stopped; run `{command}` again to continue from the checkpoint just saved "
              f"(finished runs are kept)", flush=True)
    if code != 0 or not grid.is_main():  # the test evaluation and the report are the main process's alone
        return code
    scores = results.validation(plan)
    picked = results.picked(plan, scores)
    grid.run_tests(plan, picked)
    summary = results.summarize(plan, picked, scores)
    paths = report.write(plan, summary, command)
    edge = report.edge_note(summary)
    print("\n".join(["", *report.table(summary), "", *([edge] if edge else []), f"report: {', '.join(map(str, paths))}",
                     report.closing_line(summary)]), flush=True)
    return 0


__all__ = ["CompareConfig", "load_compare_config", "run"]
