"""The synthetic tier: the instrument against closed forms on landscapes with exact answers.

Shared here: the named tolerances (each with its reason), the hypothesis strategies that
draw landscapes, and small statistics helpers. Every check drives ``sgdwalk.WalkTracker``
(through ``landscapes.walk``) or sgdwalk's pure segment functions, the code users run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from hypothesis import strategies as st

from sgdwalk.claims.report import relation_holds

if TYPE_CHECKING:
    from sgdwalk.claims.pytest_plugin import ClaimRecorder

FLOAT64_EPS: float = float(np.finfo(np.float64).eps)

# One float64 GD step θ − η H (θ − θ*) and its projection on an eigenvector round each
# coordinate once per term of two d-term dot products plus a few scalar operations; 16 ulps
# per dimension of the magnitudes involved bounds that (the classic γ_d ≈ d·eps, with margin).
ROUNDING_ULPS_PER_DIMENSION: float = 16.0

# Standard errors allowed between a seeded statistical estimate and its exact value: a 4σ
# miss has probability 6e-5 under a normal sampling distribution (the seeds are fixed, so a
# pass reproduces; the margin is for changes of seed, not for luck).
STANDARD_ERRORS: float = 4.0


def rounding_bound(dimension: int, scale: float) -> float:
    """Float64 rounding of a d-term computation on numbers of magnitude ``scale``."""
    return ROUNDING_ULPS_PER_DIMENSION * max(dimension, 1) * FLOAT64_EPS * scale


# ----------------------------------------------------------------------------- strategies


def signed_offsets(dimension: int) -> st.SearchStrategy[list[float]]:
    """Eigen-coordinates of a start point: magnitudes in [0.5, 2] (far from zero, so a
    coordinate is never lost in rounding), either sign."""
    magnitude = st.floats(0.5, 2.0)
    return st.lists(
        st.tuples(magnitude, st.booleans()).map(lambda pair: pair[0] if pair[1] else -pair[0]),
        min_size=dimension,
        max_size=dimension,
    )


rotation_seeds = st.integers(min_value=0, max_value=2**31 - 1)


# ----------------------------------------------------------------------------- properties


@dataclass
class _Worst:
    value: float
    bound: float
    relation: str
    examples: int


class WorstCase:
    """Checks of a hypothesis property: each example asserts, the claim gets the worst value.

    The ``claim`` fixture lives for one test, not one example, so a property runs its
    examples inside the test (an inner ``@given`` function) and checks each statistic here:
    an example that breaks a bound raises AssertionError with the value next to the bound
    (hypothesis then shrinks it), and ``report`` records, per statistic, the value nearest
    to failing (or the failing one) over all examples run, so the ledger shows the margin.
    Bounds must be fixed per statistic; normalise per-example bounds (error / bound ≤ 1).
    """

    def __init__(self) -> None:
        self._worst: dict[str, _Worst] = {}

    def check(self, name: str, value: float, bound: float, relation: str) -> None:
        __tracebackhide__ = True
        value, bound = float(value), float(bound)
        current = self._worst.get(name)
        if current is None:
            self._worst[name] = _Worst(value, bound, relation, 1)
        else:
            if (current.bound, current.relation) != (bound, relation):
                raise ValueError(f"statistic {name!r} changed its bound or relation between examples")
            current.examples += 1
            larger_is_worse = relation in ("<", "<=")
            # NaN is always the worst (it never holds).
            if math.isnan(value) or (value > current.value if larger_is_worse else value < current.value):
                current.value = value
        if not relation_holds(value, relation, bound):
            raise AssertionError(f"{name} = {value:.6g} {relation} {bound:.6g} FAIL")

    def report(self, claim: ClaimRecorder) -> None:
        """One ``claim.check`` per statistic with its worst value (raises on the first failing)."""
        __tracebackhide__ = True
        for name, worst in self._worst.items():
            claim.check(name, worst.value, worst.bound, worst.relation, detail=f"worst of {worst.examples} examples")


def run_property(claim: ClaimRecorder, examples: Callable[[WorstCase], None]) -> None:
    """Run ``examples`` (a function ``@given`` strategies, taking the WorstCase first) and
    record the worst statistics in ``claim``, also when an example failed."""
    __tracebackhide__ = True
    worst = WorstCase()
    try:
        examples(worst)
    finally:
        worst.report(claim)


# ----------------------------------------------------------------------------- statistics


def batch_means(values: Sequence[float], num_batches: int) -> tuple[float, float]:
    """Mean of a (correlated) series and its standard error by the method of batch means.

    Consecutive batches of a series whose correlation time is much shorter than a batch
    have nearly independent means; their spread gives the standard error of the mean.
    """
    series = np.asarray(values, dtype=np.float64)
    size = series.size // num_batches
    if num_batches < 2 or size < 1:
        raise ValueError(f"cannot split {series.size} values into {num_batches} batches")
    means = series[: size * num_batches].reshape(num_batches, size).mean(axis=1)
    return float(means.mean()), float(means.std(ddof=1)) / math.sqrt(num_batches)


def log_log_slope(times: Sequence[float], values: Sequence[float]) -> tuple[float, np.ndarray]:
    """Least-squares slope of log(values) against log(times), and the weights w with
    slope = Σ w_i log(values_i) (to propagate the variance of the values)."""
    x = np.log(np.asarray(times, dtype=np.float64))
    centered = x - x.mean()
    weights = centered / float(centered @ centered)
    return float(weights @ np.log(np.asarray(values, dtype=np.float64))), weights
