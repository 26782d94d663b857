"""What a grid folder holds, read back and summarised per arm (JSON-ready): validation accuracy per
learning rate, the picked rate, test accuracy over seeds with its interval, the paired difference to
the reference arm, the final training loss, trainable parameters, seconds per step, peak memory and
the loss curve. The learning rate is picked from validation scores only (`picked`), before any test
result is read.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingPathError
from ..train.rundir import RunDir
from . import stats
from .config import lr_name, method_of, run_folder
from .grid import BASE, TEST
from .plan import Plan


def _json(path: Path) -> dict:
    if not path.is_file():
        raise MissingPathError(f"{path} is missing: rerun bone compare with the same config to finish the grid")
    return json.loads(path.read_text())


def _losses(run: RunDir) -> list[tuple[int, float]]:
    if not run.metrics.is_file():
        raise MissingPathError(f"{run.metrics} is missing: rerun bone compare with the same config to finish the grid")
    rows = [json.loads(ln) for ln in run.metrics.read_text().splitlines() if ln.strip()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r and math.isfinite(r["loss"])]


def final_loss(run: RunDir) -> float:
    """Mean training loss over the last 10% of the logged steps (at least one)."""
    losses = [loss for _, loss in _losses(run)]
    return float(np.mean(losses[-max(1, len(losses) // 10):]))


def _runs(plan: Plan, arm: str, lr: float) -> list[RunDir]:
    return [RunDir(run_folder(plan.cfg, arm, lr, seed)) for seed in plan.cfg.seeds]


def validation(plan: Plan) -> dict[str, dict[float, list[float]]]:
    """{arm: {lr: validation accuracy per seed}} (empty per arm when nothing is picked)."""
    if not plan.cfg.needs_validation:
        return {arm: {} for arm in plan.cfg.methods}
    return {arm: {lr: [_json(r.eval("after") / "results.json")["accuracy"] for r in _runs(plan, arm, lr)]
                  for lr in plan.cfg.lrs[arm]} for arm in plan.cfg.methods}


def picked(plan: Plan, scores: dict[str, dict[float, list[float]]]) -> dict[str, float]:
    """Each arm's learning rate: its only one, or the best on the validation split (`stats.pick_lr`)."""
    out = {}
    for arm in plan.cfg.methods:
        lrs = plan.cfg.lrs[arm]
        losses = {lr: [final_loss(r) for r in _runs(plan, arm, lr)] for lr in lrs} if len(lrs) > 1 else {}
        out[arm] = lrs[0] if len(lrs) == 1 else stats.pick_lr(scores[arm], losses)
    return out


def _correct(folder: Path) -> tuple[list[str], list[int]]:
    path = RunDir(folder).eval(TEST) / "predictions.jsonl"
    if not path.is_file():
        raise MissingPathError(f"{path} is missing: rerun bone compare with the same config to finish the grid")
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r["question"] for r in rows], [int(bool(r["correct"])) for r in rows]


def _costs(plan: Plan, arm: str) -> dict:
    """Seconds per optimizer step over every session of the arm's runs, and the median of their peak
    memories (the median: the first session of a process also pays for one-time allocations)."""
    sessions = []
    for lr in plan.cfg.lrs[arm]:
        for run in _runs(plan, arm, lr):
            if run.timing.is_file():
                sessions += [json.loads(ln) for ln in run.timing.read_text().splitlines() if ln.strip()]
    steps, seconds = sum(s["steps"] for s in sessions), sum(s["seconds"] for s in sessions)
    peaks = [s["peak_bytes"] for s in sessions if s.get("peak_bytes") is not None]
    return {"seconds_per_step": seconds / steps if steps else None,
            "peak_memory_bytes": int(np.median(peaks)) if peaks else None,
            "memory_kind": sessions[0]["memory"] if sessions else None, "device": sessions[0]["device"] if sessions else None}


def _curve(runs: list[RunDir]) -> list[list[float]]:
    """[step, mean loss over the runs] for the steps every run logged."""
    per_run = [dict(_losses(r)) for r in runs]
    steps = sorted(set.intersection(*(set(p) for p in per_run)))
    return [[s, float(np.mean([p[s] for p in per_run]))] for s in steps]


def summarize(plan: Plan, lrs: dict[str, float], scores: dict[str, dict[float, list[float]]]) -> dict:
    """Everything compare.json holds (see the module docstring)."""
    cfg = plan.cfg
    boot = dict(resamples=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.stats_seed)
    items, correct = None, {}
    for arm in cfg.methods:
        rows = []
        for seed in cfg.seeds:
            questions, row = _correct(run_folder(cfg, arm, lrs[arm], seed))
            if items is not None and questions != items:
                raise DataError(f"the test predictions of {arm} seed {seed} are not on the same items as the others: "
                                       f"delete the eval/{TEST} folders of the grid and rerun bone compare")
            items = questions
            rows.append(row)
        correct[arm] = np.asarray(rows, dtype=float)
    arms = {}
    for arm in cfg.methods:
        runs = _runs(plan, arm, lrs[arm])
        test = stats.spread(correct[arm].mean(axis=1).tolist())
        low, high = stats.accuracy_interval(correct[arm], **boot)
        versus = None if arm == cfg.reference else stats.paired_difference(correct[arm], correct[cfg.reference], **boot)
        arms[arm] = {
            "label": plan.labels[arm], "method": method_of(arm), "trainable": plan.counts[arm],
            "lr": lrs[arm], "lrs": cfg.lrs[arm], "lr_at_edge": stats.grid_edge(cfg.lrs[arm], lrs[arm]),
            "validation": {lr_name(lr): stats.spread(v) for lr, v in scores[arm].items()},
            "test": {**test, "per_seed": correct[arm].mean(axis=1).tolist(), "low": low, "high": high},
            "versus_reference": versus,
            "final_loss": stats.spread([final_loss(r) for r in runs]),
            **_costs(plan, arm),
            "loss_curve": _curve(runs),
        }
    base = RunDir(cfg.root / BASE).eval(TEST) / "results.json"
    return {
        "reference": cfg.reference, "seeds": cfg.seeds, "confidence": cfg.confidence, "bootstrap": cfg.bootstrap,
        "stats_seed": cfg.stats_seed, "test_items": len(items), "data": plan.data,
        "base_accuracy": _json(base)["accuracy"] if cfg.test.base else None,
        "arms": arms,
        "ranking": sorted(cfg.methods, key=lambda a: -arms[a]["test"]["mean"]),
    }
