"""The statistics: the learning rate comes from validation scores only, the bootstrap is deterministic for
its seed, and its intervals cover known differences about as often as they claim."""
from __future__ import annotations

import numpy as np
import pytest

from bone.compare import stats

BOOT = dict(resamples=2000, confidence=0.95, seed=7)


def test_pick_lr_uses_validation_then_training_loss_then_the_smaller_rate():
    assert stats.pick_lr({1e-4: [0.5, 0.7], 3e-4: [0.6, 0.5]}, {}) == 1e-4  # means 0.6 vs 0.55
    assert stats.pick_lr({1e-4: [0.5], 3e-4: [0.5]}, {1e-4: [0.9], 3e-4: [0.4]}) == 3e-4  # tie: lower training loss
    assert stats.pick_lr({1e-4: [0.5], 3e-4: [0.5]}, {1e-4: [0.4], 3e-4: [0.4]}) == 1e-4  # still tied: smaller rate


def test_spread():
    s = stats.spread([0.6, 0.8])
    assert s["mean"] == pytest.approx(0.7) and s["std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert (s["min"], s["max"], s["n"]) == (0.6, 0.8, 2) and stats.spread([0.5])["std"] == 0.0


def synthetic(p: float, q: float, items: int, seeds: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Two arms answering `items` problems right with probability p and q (independently per seed)."""
    return (rng.random((seeds, items)) < p).astype(float), (rng.random((seeds, items)) < q).astype(float)


def test_the_interval_is_deterministic_for_a_seed():
    a, b = synthetic(0.7, 0.6, 300, 2, np.random.default_rng(0))
    first = stats.paired_difference(a, b, **BOOT)
    assert stats.paired_difference(a, b, **BOOT) == first
    assert stats.paired_difference(a, b, **{**BOOT, "seed": 8}) != first
    assert stats.accuracy_interval(a, **BOOT) == stats.accuracy_interval(a, **BOOT)


def test_the_interval_covers_a_known_difference():
    a, b = synthetic(0.75, 0.55, 2000, 2, np.random.default_rng(1))
    d = stats.paired_difference(a, b, **BOOT)
    assert d["low"] < 0.2 < d["high"] and d["significant"] and d["high"] - d["low"] < 0.08
    same = stats.paired_difference(a, a, **BOOT)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0, "significant": False}
    low, high = stats.accuracy_interval(b[:1, :300], **BOOT)
    assert 0.09 < high - low < 0.13  # one arm, 300 items: about +-0.055 at p near 0.5


def test_coverage_is_near_the_nominal_level():
    """Over many synthetic experiments with a true difference of 0.1 (300 items, one seed), the 95%
    interval contains 0.1 in about 95% of them."""
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        a, b = synthetic(0.6, 0.5, 300, 1, rng)
        d = stats.paired_difference(a, b, resamples=500, confidence=0.95, seed=int(rng.integers(1 << 30)))
        hits += d["low"] <= 0.1 <= d["high"]
    assert 0.89 <= hits / 200 <= 0.99


def test_paired_arms_must_share_items_and_seeds():
    with pytest.raises(ValueError, match="same seeds and items"):
        stats.paired_difference(np.ones((2, 10)), np.ones((2, 11)), **BOOT)


def test_grid_edge_names_the_end_of_the_list_a_pick_sits_on():
    assert stats.grid_edge([1e-4, 3e-4, 1e-3], 1e-4) == "lowest"
    assert stats.grid_edge([1e-3, 1e-4, 3e-4], 1e-3) == "highest"  # the list's order does not matter
    assert stats.grid_edge([1e-4, 3e-4, 1e-3], 3e-4) is None
    assert stats.grid_edge([3e-4], 3e-4) is None  # one rate: nothing was picked
