"""Seed-level estimates against independent references (scipy's t interval, numpy by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from sgdwalk.claims.statistics import CONFIDENCE, mean_with_t_interval, paired_difference, ratio_of_means

# Both sides compute the same float64 expression in a different order.
FLOAT64_RTOL = 1e-12


def test_t_interval_matches_scipy() -> None:
    values = [0.12, 0.31, 0.05, 0.22]
    estimate = mean_with_t_interval(values)
    low, high = stats.t.interval(CONFIDENCE, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert estimate.value == pytest.approx(np.mean(values), rel=FLOAT64_RTOL)
    assert (estimate.low, estimate.high) == pytest.approx((low, high), rel=FLOAT64_RTOL)
    assert estimate.per_seed == tuple(values)


def test_one_value_and_identical_values_have_no_width() -> None:
    assert mean_with_t_interval([0.3]).interval == (0.3, 0.3)
    assert mean_with_t_interval([0.3, 0.3, 0.3]).interval == pytest.approx((0.3, 0.3))


def test_paired_difference_is_the_interval_of_the_differences() -> None:
    first, second = [1.0, 2.0, 4.0], [0.5, 1.0, 1.0]
    assert paired_difference(first, second) == mean_with_t_interval([0.5, 1.0, 3.0])
    assert ratio_of_means(first, second).value == pytest.approx(np.mean([2.0, 2.0, 4.0]))


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [([], [], "non-empty"), ([1.0, math.nan], [1.0, 2.0], "finite"), ([1.0, 2.0], [1.0], "same seeds")],
)
def test_bad_input_is_refused(first: list[float], second: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_difference(first, second)


def test_a_zero_denominator_is_refused() -> None:
    with pytest.raises(ValueError, match="zero"):
        ratio_of_means([1.0, 2.0], [1.0, 0.0])


# ------------------------------------------------------------------------------ power
def simulated_power(effect: float, spread: float, seeds: int, trials: int, rng: np.random.Generator) -> float:
    """The share of simulated checks whose t interval's low end clears 0: normal per-seed
    values with mean ``effect`` and sd ``spread``, decided as the engine decides them."""
    values = rng.normal(effect, spread, size=(trials, seeds))
    means, errors = values.mean(axis=1), values.std(axis=1, ddof=1) / math.sqrt(seeds)
    critical = stats.t.ppf(0.5 + CONFIDENCE / 2, df=seeds - 1)
    return float(np.mean(means - critical * errors > 0))


@pytest.mark.parametrize(("effect", "spread", "seeds"), [(1.0, 1.0, 5), (0.5, 1.0, 12), (2.0, 1.0, 3)])
def test_verdict_power_matches_a_simulation_of_the_verdict(effect: float, spread: float, seeds: int) -> None:
    from sgdwalk.claims.statistics import verdict_power

    trials = 40_000
    simulated = simulated_power(effect, spread, seeds, trials, np.random.default_rng(0))
    # Four binomial standard errors of the simulated share: a false failure about once in 16,000 runs.
    tolerance = 4 * math.sqrt(0.25 / trials)
    assert verdict_power(effect, spread, seeds) == pytest.approx(simulated, abs=tolerance)


def test_seeds_for_power_is_the_smallest_count_reaching_the_power() -> None:
    from sgdwalk.claims.statistics import PLANNING_POWER, seeds_for_power, verdict_power

    per_seed = [0.11, 0.02, 0.06]  # mean 0.0633, sd 0.0451
    needed = seeds_for_power(per_seed, 0.0, ">")
    assert needed is not None
    effect, spread = float(np.mean(per_seed)), float(np.std(per_seed, ddof=1))
    assert verdict_power(effect, spread, needed) >= PLANNING_POWER > verdict_power(effect, spread, needed - 1)
    # "<" mirrors ">": the same distance below a bound needs the same seeds.
    assert seeds_for_power([-v for v in per_seed], 0.0, "<") == needed
    assert seeds_for_power([-0.1, -0.2, 0.0], 0.0, ">") is None  # the mean points the other way
    assert seeds_for_power([0.1, 0.1, 0.1], 0.0, ">") == 2  # no spread
    assert seeds_for_power([0.0, 0.0, 0.0], 0.0, "<=") == 2  # no spread, on an inclusive bound
    assert seeds_for_power([0.0, 0.0, 0.0], 0.0, "<") is None
    assert seeds_for_power([1e-6, -1e-3, 1e-3 + 1e-5], 0.0, ">") is None  # beyond reach
