"""The error bars against populations with known answers (``landscapes.SegmentProfile``).

Each replicate draws a fresh measurement set from the population, measures the segment
θ = 0 → 1 with the tracker people use, and compares the record with the population's exact
heights, floor depth, barrier excess and barrier verdict. A stated rate is checked with a
binomial bound: a rate that truly holds fails the check with probability below
``FALSE_ALARM`` (so the test is not flaky), while a real shortfall of a few points fails it.

The regime of the height intervals (docs: "error bars"): the floor is clear, its grid
neighbours lying several standard errors above it. The barrier test's rate holds always,
tested at its least favourable truth: an interior point exactly level with the higher end.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from landscapes import SegmentProfile
from sgdwalk import StepRecord, WalkTracker
from sgdwalk.instrument.sampling import PrecisionTarget
from sgdwalk.instrument.tolerances import BARRIER_TEST_CONFIDENCE

# Probability that a check of a rate which truly holds fails anyway: small enough that the
# suite is not flaky, large enough that 200-300 replicates still see a real shortfall.
FALSE_ALARM = 1e-3
# The interval the heights' standard errors are read with in these checks: 95 %, two-sided.
COVERAGE = 0.95
Z_COVERAGE = float(stats.norm.ppf(0.5 + COVERAGE / 2))

K = 10
NODES = np.arange(K + 1) / K
# Per-sample losses move together across the segment (one common factor, as on real data,
# where a hard sample is hard at every point) plus a little noise of their own per point.
COMMON_SD, OWN_SD = 1.0, 0.05
COVARIANCE = COMMON_SD**2 * np.ones((K + 1, K + 1)) + OWN_SD**2 * np.eye(K + 1)


def measure(
    profile: SegmentProfile, precision: PrecisionTarget | None = None, chunk_size: int | None = None
) -> StepRecord:
    """One tracked step from θ = 0 to θ = 1."""
    tracker = WalkTracker(profile, profile.measurement_set(chunk_size), num_alphas=K, precision=precision)
    tracker.before_step()
    with torch.no_grad():
        profile.theta.fill_(1.0)
    (record,) = tracker.after_step()
    return record


def binomial_floor(trials: int, rate: float) -> int:
    """Fewest successes a true rate ``rate`` gives, except with probability FALSE_ALARM."""
    return int(stats.binom.ppf(FALSE_ALARM, trials, rate))


def binomial_ceiling(trials: int, rate: float) -> int:
    return int(stats.binom.ppf(1.0 - FALSE_ALARM, trials, rate))


@pytest.mark.slow  # a coverage simulation over many repetitions, not a unit
def test_height_floor_and_excess_intervals_cover_the_population_values() -> None:
    # A clear floor at α = 0.6 (neighbours 0.04 above it, ~10 standard errors at 400 samples).
    means = 1.0 + 4.0 * (NODES - 0.6) ** 2
    replicates, samples = 200, 400
    names = ("height_start", "height_end", "floor_depth", "barrier_excess")
    covered = dict.fromkeys(names, 0)
    for seed in range(replicates):
        profile = SegmentProfile(means, COVARIANCE, samples, seed=seed)
        record = measure(profile)
        assert record.samples == samples
        for name in names:
            estimate, se = getattr(record, name), getattr(record, f"{name}_se")
            covered[name] += abs(estimate - getattr(profile, name)) <= Z_COVERAGE * se
    bound = binomial_floor(replicates, COVERAGE)
    for name in names:
        print(f"coverage of {name} ± {Z_COVERAGE:.2f} se: {covered[name]}/{replicates} >= {bound}")
    assert all(covered[name] >= bound for name in names), covered


@pytest.mark.slow  # a coverage simulation over many repetitions, not a unit
@pytest.mark.parametrize(
    "precision",
    [None, PrecisionTarget(height_se=None, height_relative_se=None, first_look=32)],
    ids=["exact", "targeted"],
)
def test_barrier_test_rarely_calls_a_crossing_that_is_not_there(precision: PrecisionTarget | None) -> None:
    # Least favourable truth for "crossed": one interior point exactly level with the higher
    # end (θ_t) and far above the lower one, so only its difference with θ_t stands between
    # it and a crossing.
    means = 1.0 - 0.5 * NODES - 0.2 * np.sin(np.pi * NODES) ** 2
    means[5] = 1.0
    replicates = 300
    wrong = sum(
        measure(SegmentProfile(means, COVARIANCE, 400, seed=seed), precision).barrier_test == "crossed"
        for seed in range(replicates)
    )
    allowed = binomial_ceiling(replicates, 1.0 - BARRIER_TEST_CONFIDENCE)
    print(f"false 'crossed' on a level interior: {wrong}/{replicates} <= {allowed}")
    assert wrong <= allowed


@pytest.mark.slow  # a coverage simulation over many repetitions, not a unit
@pytest.mark.parametrize(
    "precision",
    [None, PrecisionTarget(height_se=None, height_relative_se=None, first_look=32)],
    ids=["exact", "targeted"],
)
def test_barrier_test_rarely_denies_a_barrier_that_is_there(precision: PrecisionTarget | None) -> None:
    # Least favourable truth for "not crossed": a barrier barely above both ends.
    means = np.full(K + 1, 1.0)
    means[1:-1] -= 0.05
    means[5] = 1.0 + 1e-4
    replicates = 300
    records = [measure(SegmentProfile(means, COVARIANCE, 400, seed=seed), precision) for seed in range(replicates)]
    wrong = sum(record.barrier_test == "not crossed" for record in records)
    allowed = binomial_ceiling(replicates, 1.0 - BARRIER_TEST_CONFIDENCE)
    print(f"false 'not crossed' on a barrier of 1e-4: {wrong}/{replicates} <= {allowed}")
    assert wrong <= allowed


def test_a_clear_barrier_and_a_clear_valley_are_decided() -> None:
    valley = 1.0 + 4.0 * (NODES - 0.6) ** 2
    barrier = 1.0 + 0.1 * np.sin(np.pi * NODES)
    assert measure(SegmentProfile(valley, COVARIANCE, 400)).barrier_test == "not crossed"
    assert measure(SegmentProfile(barrier, COVARIANCE, 400)).barrier_test == "crossed"


def test_targeted_measurement_stops_early_and_is_deterministic() -> None:
    valley = 1.0 + 4.0 * (NODES - 0.6) ** 2
    target = PrecisionTarget(height_se=0.01, height_relative_se=None, first_look=32, seed=3)
    first = measure(SegmentProfile(valley, COVARIANCE, 2000), target)
    again = measure(SegmentProfile(valley, COVARIANCE, 2000), target)
    assert first == again
    assert first.samples is not None and first.samples < 2000
    assert first.samples in target.look_ends(2000)
    assert first.barrier_test == "not crossed"
    assert first.height_start_se is not None and first.height_start_se <= 0.01
    # Asking for more precision reads more samples, up to the whole set.
    finer = measure(
        SegmentProfile(valley, COVARIANCE, 2000),
        PrecisionTarget(height_se=1e-4, height_relative_se=None, first_look=32, seed=3),
    )
    assert finer.samples == 2000


def test_targeted_records_are_the_exact_measurement_of_the_samples_read() -> None:
    profile = SegmentProfile(1.0 + 4.0 * (NODES - 0.6) ** 2, COVARIANCE, 1000, seed=1)
    target = PrecisionTarget(height_se=0.02, height_relative_se=None, first_look=50, seed=9)
    record = measure(profile, target)
    assert record.samples is not None and record.samples < 1000
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(9))[: record.samples].numpy()
    read = profile.rows[order]
    np.testing.assert_allclose(record.segment_losses, read.mean(axis=0), rtol=1e-12, atol=1e-12)
    differences = read[:, 0] - read[:, 6]
    assert record.height_start_se == pytest.approx(differences.std(ddof=1) / np.sqrt(record.samples), rel=1e-9)
