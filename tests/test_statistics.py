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
