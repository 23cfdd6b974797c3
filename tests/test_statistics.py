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


# ------------------------------------------------------------------------ replication
def test_spread_upper_end_exceeds_the_true_deviation_as_often_as_its_one_sided_confidence() -> None:
    from sgdwalk.claims.statistics import spread_upper_end

    trials, one_sided = 5_000, 0.5 + CONFIDENCE / 2
    samples = np.random.default_rng(1).normal(0.0, 1.0, size=(trials, 3))
    covered = np.mean([spread_upper_end(sample.tolist()) >= 1.0 for sample in samples])
    # Four binomial standard errors of the simulated share: a false failure about once in 16,000 runs.
    tolerance = 4 * math.sqrt(one_sided * (1 - one_sided) / trials)
    assert covered == pytest.approx(one_sided, abs=tolerance)


def test_seeds_for_replication_is_the_smallest_count_a_simulation_passes_at_its_probability() -> None:
    from sgdwalk.claims.statistics import REPLICATION_PROBABILITY, seeds_for_replication, spread_upper_end

    per_seed = [0.41, 0.52, 0.47, 0.44]  # the 95% interval is [0.389, 0.531]
    replication = seeds_for_replication(per_seed, 0.2, ">")
    assert replication.seeds is not None and replication.passes and replication.reason == ""
    estimate = mean_with_t_interval(per_seed)
    assert replication.effect == pytest.approx(estimate.low - 0.2, rel=FLOAT64_RTOL)
    assert replication.spread == pytest.approx(spread_upper_end(per_seed), rel=FLOAT64_RTOL)
    # At the cautious effect and spread taken as the truth, fresh sets of that many seeds pass
    # at least that often, and of one seed fewer less often.
    trials = 40_000
    rng = np.random.default_rng(2)
    tolerance = 4 * math.sqrt(0.25 / trials)
    at_count = simulated_power(replication.effect, replication.spread, replication.seeds, trials, rng)
    below = simulated_power(replication.effect, replication.spread, replication.seeds - 1, trials, rng)
    assert at_count >= REPLICATION_PROBABILITY - tolerance
    assert below <= REPLICATION_PROBABILITY + tolerance
    # "<" mirrors ">".
    assert seeds_for_replication([-v for v in per_seed], -0.2, "<").seeds == replication.seeds


@pytest.mark.slow  # a simulation of many replications, not a unit
def test_seeds_for_replication_keeps_its_promise_where_the_plug_in_count_does_not() -> None:
    """Over many first sets of seeds of one true check, the count falls short of the
    probability (at the true effect and spread) no more often than 1 − CONFIDENCE."""
    from sgdwalk.claims.statistics import REPLICATION_PROBABILITY, seeds_for_power, seeds_for_replication, verdict_power

    effect, spread, first_seeds, trials = 3.0, 1.0, 5, 300
    short, plug_in_short = 0, 0
    for sample in np.random.default_rng(3).normal(effect, spread, size=(trials, first_seeds)):
        counted = seeds_for_replication(sample.tolist(), 0.0, ">").seeds
        short += counted is not None and verdict_power(effect, spread, counted) < REPLICATION_PROBABILITY
        plug_in = seeds_for_power(sample.tolist(), 0.0, ">", power=REPLICATION_PROBABILITY)
        plug_in_short += plug_in is not None and verdict_power(effect, spread, plug_in) < REPLICATION_PROBABILITY
    # Four binomial standard errors of a share at the promised limit.
    limit = (1 - CONFIDENCE) + 4 * math.sqrt(CONFIDENCE * (1 - CONFIDENCE) / trials)
    assert short / trials <= limit
    # The test can fail: the measured effect and spread, taken as the truth, miss it often.
    assert plug_in_short / trials > limit


def test_seeds_for_replication_sizes_only_intervals_clear_of_the_bound() -> None:
    from sgdwalk.claims.statistics import MAX_PLANNED_SEEDS, seeds_for_replication

    crossing = seeds_for_replication([-0.1, 0.2, 0.05], 0.0, ">")
    assert crossing.seeds is None and not crossing.passes and "reaches the bound" in crossing.reason
    wrong_side = seeds_for_replication([-0.31, -0.29, -0.3], 0.0, ">")  # any seeds fail it again
    assert wrong_side.seeds == 2 and not wrong_side.passes and wrong_side.effect < 0
    assert seeds_for_replication([0.1, 0.1, 0.1], 0.0, ">").seeds == 2  # no spread
    on_the_bound = seeds_for_replication([0.0, 0.0, 0.0], 0.0, "<=")  # passed, on an inclusive bound
    assert on_the_bound.seeds is None and on_the_bound.passes
    beyond = seeds_for_replication([0.32308, 0.1921, 0.42473], 0.0, ">")  # a low end of +0.024
    assert beyond.seeds is None and beyond.passes and f"more than {MAX_PLANNED_SEEDS}" in beyond.reason
