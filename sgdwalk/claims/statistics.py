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


#: The power ``seeds_for_power`` plans for: the chance that a rerun with that many seeds decides
#: the check the way its mean points, the conventional 80 % of study planning (Cohen 1988).
PLANNING_POWER: float = 0.8
#: A spread below this fraction of the effect is the rounding of equal per-seed values (whose
#: mean and deviations are not exact in binary): any two seeds decide such a check.
ROUNDING_SPREAD: float = 1e-9
#: Beyond this many seeds a check is reported as out of reach rather than given a number.
MAX_PLANNED_SEEDS: int = 200


def verdict_power(effect: float, spread: float, seeds: int, confidence: float = CONFIDENCE) -> float:
    """The chance that ``seeds`` seeds decide a check whose true per-seed mean lies ``effect``
    beyond its bound (in the claimed direction) with per-seed standard deviation ``spread``.

    The verdict holds when the t interval's conservative end clears the bound, i.e. when
    (mean − bound) / (s / √n) exceeds the t quantile at ``0.5 + confidence / 2``; that ratio
    follows a noncentral t distribution with n − 1 degrees of freedom and noncentrality
    effect · √n / spread.
    """
    if seeds < 2:
        raise ValueError(f"a t interval needs at least two seeds, got {seeds}")
    if not spread > 0:
        raise ValueError(f"spread must be positive, got {spread}")
    from scipy import stats

    critical = float(stats.t.ppf(0.5 + confidence / 2, df=seeds - 1))
    noncentrality = effect * math.sqrt(seeds) / spread
    return float(stats.nct.sf(critical, df=seeds - 1, nc=noncentrality))


def seeds_for_power(
    per_seed: Sequence[float],
    bound: float,
    relation: str,
    power: float = PLANNING_POWER,
    confidence: float = CONFIDENCE,
) -> int | None:
    """How many seeds would decide a check with probability ``power``, if its true effect and
    spread were the ones these per-seed values show (a plug-in estimate: with three seeds
    the spread itself is uncertain by a factor of about two, so read it as an order of size).

    None when the mean does not point the claimed way (no number of seeds decides it then)
    or more than ``MAX_PLANNED_SEEDS`` would be needed.
    """
    array = _finite_values(per_seed)
    if array.size < 2:
        raise ValueError("a spread needs at least two per-seed values")
    direction = 1.0 if relation in (">", ">=") else -1.0
    effect = direction * (float(array.mean()) - bound)
    spread = float(array.std(ddof=1))
    if spread <= ROUNDING_SPREAD * abs(effect) or spread == 0.0:
        # No spread: the interval is the mean itself, and decides as the mean does.
        inclusive = relation in (">=", "<=")
        return 2 if effect > 0 or (inclusive and effect == 0) else None
    if effect <= 0:
        return None
    for seeds in range(2, MAX_PLANNED_SEEDS + 1):
        if verdict_power(effect, spread, seeds, confidence) >= power:
            return seeds
    return None


#: The chance ``seeds_for_replication`` plans for: that a fresh set of seeds gives a check the
#: verdict its first seeds gave. 90 % is the power confirmatory studies plan for, a step above
#: the planning minimum (``PLANNING_POWER``): a tier of 27 checks, each sized at the limit,
#: then expects under three changed verdicts on fresh seeds rather than five.
REPLICATION_PROBABILITY: float = 0.9


@dataclass(frozen=True)
class Replication:
    """How many seeds replicate a check's verdict on fresh seeds (``seeds_for_replication``).

    Attributes:
        seeds: the count, or None when the check cannot be sized (``reason`` says why).
        effect: the cautious effect: how far the interval's end nearest the bound lies from
            it, positive on the claimed side (0 when the interval reaches the bound).
        spread: the cautious per-seed standard deviation (the upper end of its interval).
        passes: whether the first seeds' verdict was a pass, the verdict to replicate.
        reason: why ``seeds`` is None; empty otherwise.
    """

    seeds: int | None
    effect: float
    spread: float
    passes: bool
    reason: str = ""


def spread_upper_end(per_seed: Sequence[float], confidence: float = CONFIDENCE) -> float:
    """The upper end of the two-sided chi-square interval of the per-seed standard deviation:
    s · √((n − 1) / χ²_{(1 − confidence)/2, n − 1}), which normal per-seed values exceed their
    true deviation with probability 1/2 + confidence/2 (97.5 % at 95 %)."""
    array = _finite_values(per_seed)
    if array.size < 2:
        raise ValueError("a spread needs at least two per-seed values")
    from scipy import stats

    degrees = array.size - 1
    return float(array.std(ddof=1)) * math.sqrt(degrees / float(stats.chi2.ppf((1 - confidence) / 2, df=degrees)))


def seeds_for_replication(
    per_seed: Sequence[float],
    bound: float,
    relation: str,
    probability: float = REPLICATION_PROBABILITY,
    confidence: float = CONFIDENCE,
) -> Replication:
    """How many fresh seeds give a check the verdict these per-seed values gave it, with
    probability ``probability``, at a cautious effect and spread.

    The argument. A check on n seeds passes when the conservative end of its Student-t
    interval clears the bound: T = (mean − bound) / (s / √n), signed so that the claimed side
    is positive, exceeds t_{n−1} at 1/2 + confidence/2. For normal per-seed values with true
    effect δ and deviation σ, T is noncentral t with n − 1 degrees of freedom and
    noncentrality δ√n/σ, so a fresh set of n seeds passes with probability
    ``verdict_power(δ, σ, n)``, which grows with δ and n and, for δ > 0, falls with σ.

    δ and σ are unknown; the first seeds bound them. The interval's end nearest the bound,
    δ_c from it, is a one-sided 1/2 + confidence/2 (97.5 %) confidence bound on δ from the
    bound's side; the chi-square interval's upper end σ_c (``spread_upper_end``) is one on σ
    from above. By the union bound both hold at once with confidence at least ``confidence``
    (95 %), and then:

    - a check that passed (δ_c > 0, so δ ≥ δ_c) passes on n fresh seeds with probability at
      least ``verdict_power(δ_c, σ_c, n)``: the count is the smallest n at which that reaches
      ``probability``, or none beyond ``MAX_PLANNED_SEEDS``;
    - a check whose whole interval lies on the wrong side (δ_c < 0, so δ < 0) passes on any n
      seeds with probability under 1/2 − confidence/2 (2.5 %, the t test's size): any count,
      two seeds, repeats its failure;
    - an interval that reaches the bound bounds δ on neither side: no count makes a fresh
      verdict predictable, and the check is not sized.

    The cautious values make the count large where the first seeds were few (with three, σ_c
    is 6.3 times the measured deviation); ``seeds_for_power`` gives the plug-in count beside it.
    """
    array = _finite_values(per_seed)
    if array.size < 2:
        raise ValueError("a spread needs at least two per-seed values")
    estimate = mean_with_t_interval(array.tolist(), confidence)
    direction = 1.0 if relation in (">", ">=") else -1.0
    ends = (direction * (estimate.low - bound), direction * (estimate.high - bound))
    spread = spread_upper_end(array.tolist(), confidence)
    # The decisive end is the nearer one on the claimed side (the smaller signed distance).
    passes = min(ends) > 0 or (relation in (">=", "<=") and min(ends) == 0)
    if min(ends) <= 0 <= max(ends):
        reason = (
            f"the {confidence:.0%} interval [{estimate.low:.4g}, {estimate.high:.4g}] reaches the bound {bound:.4g}: "
            "it bounds the effect on neither side, so no count makes a fresh verdict predictable"
        )
        return Replication(None, 0.0, spread, passes, reason)
    effect = min(ends, key=abs)
    if effect < 0:
        return Replication(2, effect, spread, False)
    if spread <= ROUNDING_SPREAD * effect:
        # No spread (equal per-seed values): the normal model bounds σ at 0, and any seeds
        # decide as the mean does; a statistic that can take other values may still vary.
        return Replication(2, effect, spread, True)
    for seeds in range(2, MAX_PLANNED_SEEDS + 1):
        if verdict_power(effect, spread, seeds, confidence) >= probability:
            return Replication(seeds, effect, spread, True)
    return Replication(None, effect, spread, True, f"beyond reach (more than {MAX_PLANNED_SEEDS} seeds)")
