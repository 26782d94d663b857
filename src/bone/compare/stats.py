"""The statistics of a comparison: the learning-rate choice, the spread over seeds, bootstrap intervals.

Inputs are plain numbers (per-item correctness as a seeds x items 0/1 matrix); every result is
deterministic for its seed. The bootstrap resamples both sources of noise a reader cares about:
the test items (which problems happened to be in the test set) and the training seeds (data
order, initialisation, dropout). Differences are paired: one resample draws the same items and
the same seeds for both arms, because a seed fixes the same data order for every arm and the
items are the same problems.
"""
from __future__ import annotations

import numpy as np

CHUNK = 1000  # resamples drawn at a time (bounds memory at seeds x CHUNK x items)


def pick_lr(validation: dict[float, list[float]], train_loss: dict[float, list[float]]) -> float:
    """The learning rate with the highest mean validation accuracy over seeds; ties go to the lower mean
    final training loss, then to the smaller rate. Test scores are never an input."""
    def key(lr: float):
        return (-float(np.mean(validation[lr])), float(np.mean(train_loss.get(lr, [0.0]))), lr)

    return min(validation, key=key)


def grid_edge(lrs: list[float], picked: float) -> str | None:
    """"lowest" or "highest" when `picked` is that end of a list of two or more rates (the best rate
    may then lie beyond the list), else None."""
    if len(set(lrs)) < 2:
        return None
    return "lowest" if picked == min(lrs) else "highest" if picked == max(lrs) else None


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max of `values`."""
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def _resampled_means(scores: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Mean of `scores` (seeds x items) over `resamples` draws of seeds and items with replacement."""
    s, n = scores.shape
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        c = min(CHUNK, resamples - start)
        items = rng.integers(0, n, size=(c, n))
        seeds = rng.integers(0, s, size=(c, s))
        per_seed = scores[:, items].mean(axis=2)  # (seeds, c): each seed's mean over the drawn items
        out[start:start + c] = per_seed[seeds.T, np.arange(c)].mean(axis=0)
    return out


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def _matrix(correct) -> np.ndarray:
    m = np.asarray(correct, dtype=float)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"expected a seeds x items matrix, got shape {m.shape}")
    return m


def accuracy_interval(correct, *, resamples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean accuracy of one arm (seeds x items 0/1)."""
    return _interval(_resampled_means(_matrix(correct), resamples, seed), confidence)


def paired_difference(a, b, *, resamples: int, confidence: float, seed: int) -> dict:
    """Accuracy of `a` minus that of `b` (both seeds x items, the same seeds and items in the same
    order): {"diff", "low", "high", "significant"} with a paired percentile bootstrap interval;
    significant when the interval excludes 0."""
    a, b = _matrix(a), _matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same seeds and items, got shapes {a.shape} and {b.shape}")
    diff = a - b
    low, high = _interval(_resampled_means(diff, resamples, seed), confidence)
    return {"diff": float(diff.mean()), "low": low, "high": high, "significant": bool(low > 0 or high < 0)}
