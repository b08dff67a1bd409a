"""Paired comparisons with 95% intervals, as pure numpy/scipy functions.

Two intervals answer two questions about a difference "method A minus method B" in top-1
(percentage points):

* **Over seeds** (:func:`paired_interval`): the runs of A and B that share a seed (and so the
  subset of event recordings, the validation split and the initial draw) are paired; the
  Student t interval of the mean paired difference says how much the result moves when the
  whole experiment is rerun with another seed. This is the interval the docs quote.
* **Over test recordings** (:func:`grouped_bootstrap`): for one pair of runs, how much the
  difference moves with another test set of the same kind. Recordings made from one source
  image are not independent (the emulator turns each image into several), so the bootstrap
  resamples source images, each with all its recordings.

The words follow the interval (:func:`verdict`): "ahead" or "behind" only where the 95%
interval excludes zero, otherwise "no difference detected".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval, over ``n`` units (seeds, or resampled test sets)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float = math.nan
    """Sample standard deviation of the units (seeds); nan for n < 2 or a bootstrap."""

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def text(self, digits: int = 1, signed: bool = True) -> str:
        """``+4.7 [-0.2, 9.7]``: the mean and its interval, in points."""
        f = f"{{:+.{digits}f}}" if signed else f"{{:.{digits}f}}"
        if self.n < 2 or math.isnan(self.low):
            return f.format(self.mean)
        return f"{f.format(self.mean)} [{f.format(self.low)}, {f.format(self.high)}]"


def mean_interval(values: Iterable[float], level: float = LEVEL) -> Interval:
    """Mean of ``values`` with its Student t interval (nan bounds for fewer than 2 values)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


def paired_interval(a: dict, b: dict, level: float = LEVEL) -> Interval:
    """Mean of ``a[k] - b[k]`` over the keys (seeds) both have, with its t interval."""
    keys = sorted(set(a) & set(b), key=str)
    return mean_interval([a[k] - b[k] for k in keys if a[k] is not None and b[k] is not None],
                         level)


def pooled_paired_interval(pairs: Sequence[tuple[dict, dict]],
                           level: float = LEVEL) -> Interval:
    """One paired comparison across several cells (fractions) run with the same seeds: each
    seed's differences are averaged over the cells it has, and the interval is over seeds.
    The seed is the replicate: the cells of one seed share its initial draw and, with nested
    subsets, its recordings, so counting each cell as a replicate would overstate n. The
    cells are averaged as they are (a cell with a larger effect pulls the mean), so read it
    beside the per-cell intervals."""
    by_seed: dict = {}
    for a, b in pairs:
        for k in sorted(set(a) & set(b), key=str):
            if a[k] is not None and b[k] is not None:
                by_seed.setdefault(k, []).append(a[k] - b[k])
    return mean_interval([sum(d) / len(d) for d in by_seed.values()], level)


def grouped_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, groups: np.ndarray,
                      resamples: int = 2000, seed: int = 0,
                      level: float = LEVEL) -> Interval:
    """Difference in top-1 (points) of two predictors on the same test recordings, with a
    percentile bootstrap interval that resamples whole groups (source images).

    ``correct_a``/``correct_b``: per-recording hits (bool or 0/1) of the two predictors;
    ``groups``: each recording's group id (``/test/image_index``; a recording without one,
    -1, is its own group)."""
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    g = np.asarray(groups)
    if not a.shape == b.shape == g.shape:
        raise ValueError(f"hits and groups differ in shape: {a.shape}, {b.shape}, {g.shape}")
    if a.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    g = np.where(g < 0, -1 - np.arange(g.size), g)  # ungrouped recordings: one group each
    _, group_of = np.unique(g, return_inverse=True)
    n_groups = int(group_of.max()) + 1
    diff_sum = np.bincount(group_of, weights=a - b, minlength=n_groups)
    count = np.bincount(group_of, minlength=n_groups).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(resamples, n_groups))
    boot = 100 * diff_sum[draws].sum(1) / count[draws].sum(1)
    low, high = np.quantile(boot, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(100 * (a - b).mean()), float(low), float(high), n_groups)


def verdict(interval: Interval, ahead: str = "ahead", behind: str = "behind") -> str:
    """The words a comparison may use: ``ahead``/``behind`` where the interval excludes zero,
    otherwise "no difference detected", always with n."""
    if interval.n < 2 or math.isnan(interval.low):
        return f"n = {interval.n}: no interval"
    if interval.low > 0:
        return f"{ahead} (n = {interval.n})"
    if interval.high < 0:
        return f"{behind} (n = {interval.n})"
    return f"no difference detected (n = {interval.n})"
