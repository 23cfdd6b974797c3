"""Statistics with uncertainty for claim tests: seed-level estimates and their intervals.

Claims compare settings run with the same seeds, so the unit of evidence is the seed: a
per-seed statistic (e.g. the mean cosine over a tracked window) or a per-seed paired
difference between two settings. Steps within one run are autocorrelated and are never
treated as independent samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Two-sided confidence of every interval the suites report (95 %).
CONFIDENCE: float = 0.95


@dataclass(frozen=True)
class Estimate:
    """A statistic over seeds: its mean, a confidence interval, and the per-seed values.

    When the statistic is built from measured losses, ``measurement_se`` holds each seed's
    standard error from the finite measurement set with the errors of a window's steps taken
    as perfectly correlated (an upper bound: every step reads the same samples), and
    ``measurement_se_independent`` with them taken as independent (a lower estimate);
    ``measurement_share_range`` then says how much of the seed-to-seed variance that
    accounts for. The interval is over seeds either way: the seed stays the unit of
    evidence, and its spread already contains the measurement's.
    """

    value: float
    low: float
    high: float
    per_seed: tuple[float, ...]
    measurement_se: tuple[float, ...] | None = None
    measurement_se_independent: tuple[float, ...] | None = None

    @property
    def interval(self) -> tuple[float, float]:
        return (self.low, self.high)

    @property
    def measurement_share_range(self) -> tuple[float, float] | None:
        """Mean measurement variance over the variance of the per-seed values, with the
        steps' errors independent and perfectly correlated (None without measurement errors,
        with one seed, or with no spread). Near or above 1, more samples rather than more
        seeds would sharpen the statistic."""
        if self.measurement_se is None or self.measurement_se_independent is None or len(self.per_seed) < 2:
            return None
        spread = float(np.var(self.per_seed, ddof=1))
        if spread == 0.0:
            return None
        low, high = (
            float(np.mean(np.square(errors))) / spread
            for errors in (self.measurement_se_independent, self.measurement_se)
        )
        return low, high

    def __str__(self) -> str:
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}] (n={len(self.per_seed)})"


def _finite_values(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("need a non-empty sequence of per-seed values")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"per-seed values must be finite, got {array.tolist()}")
    return array


def mean_with_t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean of per-seed values with a Student-t interval (honest for 3-5 seeds).

    With a single value the interval is that value (no spread can be estimated); with
    identical values it has zero width.
    """
    array = _finite_values(values)
    mean = float(array.mean())
    if array.size == 1:
        return Estimate(mean, mean, mean, (mean,))
    # Imported here: scipy.stats takes ~2 s to import, which every test session would pay.
    from scipy import stats

    standard_error = float(array.std(ddof=1)) / math.sqrt(array.size)
    half_width = float(stats.t.ppf(0.5 + confidence / 2, df=array.size - 1)) * standard_error
    return Estimate(mean, mean - half_width, mean + half_width, tuple(array.tolist()))


def paired_difference(first: Sequence[float], second: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """first − second per seed (the same seeds in both), with a t interval on the differences."""
    a, b = _finite_values(first), _finite_values(second)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same seeds: {a.size} vs {b.size}")
    return mean_with_t_interval((a - b).tolist(), confidence)


def ratio_of_means(
    numerator: Sequence[float], denominator: Sequence[float], confidence: float = CONFIDENCE
) -> Estimate:
    """Per-seed ratios numerator/denominator, with a t interval on the ratios."""
    a, b = _finite_values(numerator), _finite_values(denominator)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same seeds: {a.size} vs {b.size}")
    if np.any(b == 0):
        raise ValueError("a denominator is zero")
    return mean_with_t_interval((a / b).tolist(), confidence)
