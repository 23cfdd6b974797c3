"""summarize_segment and alpha_grid against segments whose answers are written by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgdwalk.instrument.segment import DEFAULT_NUM_ALPHAS, alpha_grid, summarize_segment
from sgdwalk.instrument.tolerances import (
    BARRIER_ABSOLUTE_TOLERANCE,
    BARRIER_RELATIVE_TOLERANCE,
    FLOOR_RELATIVE_TOLERANCE,
)
from tests.helpers import FLOAT64_DIVIDED_DIFFERENCES, FLOAT64_REORDERED, assert_close

GRID4 = [0.0, 0.25, 0.5, 0.75]


# ------------------------------------------------------------------------------- the grid
def test_default_grid_is_the_authors_tenths() -> None:
    assert DEFAULT_NUM_ALPHAS == 10
    assert alpha_grid().tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


@pytest.mark.parametrize("num_alphas", [2, 3, 7, 10, 64])
def test_grid_is_k_uniform_points_in_zero_one(num_alphas: int) -> None:
    grid = alpha_grid(num_alphas)
    assert grid.dtype == np.float64
    assert grid.shape == (num_alphas,)
    assert grid[0] == 0.0 and grid[-1] < 1.0
    assert_close(np.diff(grid), np.full(num_alphas - 1, 1.0 / num_alphas), FLOAT64_REORDERED, "spacing")


@pytest.mark.parametrize("num_alphas", [1, 0, -3])
def test_grid_needs_two_points(num_alphas: int) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        alpha_grid(num_alphas)


@pytest.mark.parametrize("num_alphas", [2.0, True, "10"])
def test_grid_size_must_be_an_int(num_alphas: object) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        alpha_grid(num_alphas)  # type: ignore[arg-type]  # deliberately wrong type: the run-time check is under test


# ----------------------------------------------------------------- hand-computed segments
def test_interior_floor_by_hand() -> None:
    summary = summarize_segment(GRID4, [1.0, 0.6, 0.4, 0.7], 0.9)
    assert summary.loss_start == 1.0 and summary.loss_end == 0.9
    assert summary.floor == 0.4 and summary.alpha_star == 0.5
    assert summary.interior_floor
    assert_close(summary.height_start, 0.6, FLOAT64_REORDERED, "L(θ_t) − y")
    assert_close(summary.height_end, 0.5, FLOAT64_REORDERED, "L(θ_{t+1}) − y")
    # Parabola through (.25, .6), (.5, .4), (.75, .7): y = .6 − .8(a − .25) + 4(a − .25)(a − .5),
    # vertex where −.8 + 4(2a − .75) = 0, a = .475, value .6 − .8·.225 + 4·.225·(−.025) = .3975.
    assert_close(summary.alpha_star_refined, 0.475, FLOAT64_REORDERED, "refined α*")
    assert_close(summary.floor_refined, 0.3975, FLOAT64_REORDERED, "refined floor")
    assert not summary.barrier and summary.barrier_height == 0.0 and summary.barrier_alpha is None


def test_floor_at_the_start_is_not_interior() -> None:
    summary = summarize_segment(GRID4, [0.5, 0.6, 0.7, 0.8], 0.9)
    assert (summary.floor, summary.alpha_star, summary.interior_floor) == (0.5, 0.0, False)
    assert summary.height_start == 0.0
    assert_close(summary.height_end, 0.4, FLOAT64_REORDERED, "height_end")
    assert (summary.floor_refined, summary.alpha_star_refined) == (0.5, 0.0)


def test_floor_at_the_end_is_not_interior() -> None:
    summary = summarize_segment(GRID4, [0.9, 0.8, 0.7, 0.6], 0.5)
    assert (summary.floor, summary.alpha_star, summary.interior_floor) == (0.5, 1.0, False)
    assert summary.height_end == 0.0
    assert_close(summary.height_start, 0.4, FLOAT64_REORDERED, "height_start")
    assert (summary.floor_refined, summary.alpha_star_refined) == (0.5, 1.0)


def test_flat_segment_has_no_interior_floor_and_no_barrier() -> None:
    summary = summarize_segment(GRID4, [2.0, 2.0, 2.0, 2.0], 2.0)
    assert summary.alpha_star == 0.0 and not summary.interior_floor and not summary.barrier
    assert summary.height_start == summary.height_end == 0.0


@pytest.mark.parametrize(
    ("dip", "interior"),
    [(FLOOR_RELATIVE_TOLERANCE / 10, False), (FLOOR_RELATIVE_TOLERANCE * 10, True)],
    ids=["dip-below-tolerance", "dip-above-tolerance"],
)
def test_interior_floor_needs_a_dip_beyond_rounding(dip: float, interior: bool) -> None:
    summary = summarize_segment(GRID4, [1.0, 1.0 - dip, 1.0, 1.0], 1.0)
    assert summary.alpha_star == 0.25  # the grid minimum is interior either way
    assert summary.interior_floor is interior


def test_barrier_by_hand() -> None:
    summary = summarize_segment(GRID4, [1.0, 1.3, 1.1, 0.9], 0.8)
    assert summary.barrier
    assert_close(summary.barrier_height, 0.3, FLOAT64_REORDERED, "1.3 − max(1.0, 0.8)")
    assert summary.barrier_alpha == 0.25
    assert summary.floor == 0.8 and summary.alpha_star == 1.0


def test_barrier_is_measured_against_the_higher_endpoint() -> None:
    # 1.3 is above L(θ_t) = 1.0 but below L(θ_{t+1}) = 1.5: a monotone-ish climb, no barrier.
    summary = summarize_segment(GRID4, [1.0, 1.3, 1.2, 1.4], 1.5)
    assert not summary.barrier and summary.barrier_height == 0.0 and summary.barrier_alpha is None


def test_barrier_ignores_the_endpoints_themselves() -> None:
    # The grid's α = 0 is an endpoint: being the highest point there is no barrier.
    summary = summarize_segment(GRID4, [3.0, 1.0, 1.0, 1.0], 1.0)
    assert not summary.barrier


# Dyadic tolerances and losses: threshold = 2^-20 + 2^-10 · 1 is exact in float64, and so is
# 1 + threshold, so the boundary case is tested exactly, not up to rounding.
DYADIC_RELATIVE = 2.0**-10
DYADIC_ABSOLUTE = 2.0**-20
DYADIC_THRESHOLD = DYADIC_ABSOLUTE + DYADIC_RELATIVE * 1.0


@pytest.mark.parametrize(
    ("peak", "barrier"),
    [
        (np.nextafter(1.0 + DYADIC_THRESHOLD, 0.0), False),
        (1.0 + DYADIC_THRESHOLD, False),
        (np.nextafter(1.0 + DYADIC_THRESHOLD, 2.0), True),
    ],
    ids=["just-below", "exactly-at", "just-above"],
)
def test_barrier_tolerance_boundary(peak: float, barrier: bool) -> None:
    assert (1.0 + DYADIC_THRESHOLD) - 1.0 == DYADIC_THRESHOLD  # the premise: no rounding
    summary = summarize_segment(
        GRID4,
        [1.0, 0.5, float(peak), 0.5],
        0.25,
        barrier_relative_tolerance=DYADIC_RELATIVE,
        barrier_absolute_tolerance=DYADIC_ABSOLUTE,
    )
    assert summary.barrier is barrier
    if barrier:
        assert summary.barrier_height == float(peak) - 1.0 > DYADIC_THRESHOLD
        assert summary.barrier_alpha == 0.5
    else:
        assert summary.barrier_height == 0.0 and summary.barrier_alpha is None


@pytest.mark.parametrize(("factor", "barrier"), [(0.5, False), (2.0, True)])
def test_default_barrier_tolerance_scales_with_the_higher_endpoint(factor: float, barrier: bool) -> None:
    high = 3.0
    threshold = BARRIER_ABSOLUTE_TOLERANCE + BARRIER_RELATIVE_TOLERANCE * high
    summary = summarize_segment(GRID4, [high, high + factor * threshold, 1.0, 1.0], 1.0)
    assert summary.barrier is barrier


def test_absolute_tolerance_alone_for_losses_near_zero() -> None:
    kwargs = {"barrier_relative_tolerance": 0.0, "barrier_absolute_tolerance": 1e-3}
    assert not summarize_segment(GRID4, [0.0, 0.0009, 0.0, 0.0], 0.0, **kwargs).barrier
    assert summarize_segment(GRID4, [0.0, 0.0011, 0.0, 0.0], 0.0, **kwargs).barrier


def test_zero_tolerance_counts_any_excess() -> None:
    kwargs = {"barrier_relative_tolerance": 0.0, "barrier_absolute_tolerance": 0.0}
    assert summarize_segment(GRID4, [1.0, np.nextafter(1.0, 2.0), 0.0, 0.0], 0.0, **kwargs).barrier
    assert not summarize_segment(GRID4, [1.0, 1.0, 0.0, 0.0], 0.0, **kwargs).barrier


# ------------------------------------------------------------------ parabolic refinement
@given(
    center=st.floats(0.2, 0.8),
    curvature=st.floats(1e-2, 1e3),
    depth=st.floats(-10.0, 10.0),
    num_alphas=st.integers(4, 20),
)
def test_refinement_is_exact_on_quadratic_profiles(
    center: float, curvature: float, depth: float, num_alphas: int
) -> None:
    alphas = alpha_grid(num_alphas)
    profile = curvature * (np.append(alphas, 1.0) - center) ** 2 + depth
    summary = summarize_segment(alphas, profile[:-1], float(profile[-1]))
    # The grid minimum is interior for these centres, so the vertex is interpolated.
    assert 0.0 < summary.alpha_star < 1.0
    scale = FLOAT64_DIVIDED_DIFFERENCES
    assert_close(summary.alpha_star_refined, center, scale, "vertex α")
    assert math.isclose(summary.floor_refined, depth, rel_tol=scale.rtol, abs_tol=scale.atol * max(1.0, curvature))
    assert summary.floor_refined <= summary.floor
    assert abs(summary.alpha_star - center) <= 0.5 / num_alphas + 1e-12


def test_refinement_of_a_kink_stays_between_the_neighbours() -> None:
    alphas = alpha_grid(10)
    profile = np.abs(np.append(alphas, 1.0) - 0.43)
    summary = summarize_segment(alphas, profile[:-1], float(profile[-1]))
    assert summary.alpha_star == 0.4
    assert 0.3 <= summary.alpha_star_refined <= 0.5
    assert summary.floor_refined <= summary.floor


# ------------------------------------------------------------------- random profiles
LOSS = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def profiles(draw: st.DrawFn) -> tuple[np.ndarray, list[float], float]:
    num_alphas = draw(st.integers(2, 12))
    losses = draw(st.lists(LOSS, min_size=num_alphas, max_size=num_alphas))
    return alpha_grid(num_alphas), losses, draw(LOSS)


@given(profiles())
def test_random_profile_invariants(profile: tuple[np.ndarray, list[float], float]) -> None:
    alphas, losses, loss_end = profile
    summary = summarize_segment(alphas, losses, loss_end)
    every_loss = [*losses, loss_end]
    assert summary.floor == min(every_loss)
    assert all(summary.floor <= value for value in every_loss)
    assert summary.floor_refined <= summary.floor
    assert summary.height_start >= 0.0 and summary.height_end >= 0.0
    assert summary.alpha_star in [*alphas.tolist(), 1.0]
    if summary.interior_floor:
        assert 0.0 < summary.alpha_star < 1.0
        assert summary.floor < min(losses[0], loss_end)
    high = max(losses[0], loss_end)
    if summary.barrier:
        assert summary.barrier_height > BARRIER_ABSOLUTE_TOLERANCE + BARRIER_RELATIVE_TOLERANCE * abs(high)
        assert summary.barrier_alpha is not None and 0.0 < summary.barrier_alpha < 1.0
        assert summary.barrier_height == max(losses[1:]) - high
    else:
        assert summary.barrier_height == 0.0 and summary.barrier_alpha is None


@given(profiles())
def test_reversed_profile_mirrors_floor_and_barrier(profile: tuple[np.ndarray, list[float], float]) -> None:
    # On the uniform grid, walking the segment backwards is the same grid: α ↦ 1 − α.
    alphas, losses, loss_end = profile
    forward = summarize_segment(alphas, losses, loss_end)
    backward = summarize_segment(alphas, [loss_end, *losses[:0:-1]], losses[0])
    assert backward.barrier is forward.barrier
    assert backward.barrier_height == forward.barrier_height
    assert backward.floor == forward.floor
    assert backward.interior_floor is forward.interior_floor
    assert (backward.height_start, backward.height_end) == (forward.height_end, forward.height_start)
    every_loss = [*losses, loss_end]
    if every_loss.count(forward.floor) == 1:
        assert_close(backward.alpha_star, 1.0 - forward.alpha_star, FLOAT64_REORDERED, "mirrored α*")
    interior = losses[1:]
    if forward.barrier and interior.count(max(interior)) == 1:
        assert backward.barrier_alpha is not None and forward.barrier_alpha is not None
        assert_close(backward.barrier_alpha, 1.0 - forward.barrier_alpha, FLOAT64_REORDERED, "mirrored peak")


def test_as_dict_holds_every_field() -> None:
    summary = summarize_segment(GRID4, [1.0, 0.6, 0.4, 0.7], 0.9)
    assert summary.as_dict()["floor"] == 0.4
    assert set(summary.as_dict()) == set(summary.__dataclass_fields__)


# -------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("losses", "loss_end"),
    [([1.0, float("nan"), 1.0, 1.0], 1.0), ([1.0, 1.0, float("inf"), 1.0], 1.0), ([1.0] * 4, float("nan"))],
    ids=["nan-in-grid", "inf-in-grid", "nan-at-end"],
)
def test_non_finite_losses_are_refused(losses: list[float], loss_end: float) -> None:
    with pytest.raises(ValueError, match=r"finite.*diverged"):
        summarize_segment(GRID4, losses, loss_end)


@pytest.mark.parametrize(
    ("alphas", "losses", "message"),
    [
        ([0.1, 0.2, 0.3], [1.0, 1.0, 1.0], "start at α = 0"),
        ([0.0, 0.5, 0.25], [1.0, 1.0, 1.0], "increase strictly"),
        ([0.0, 0.5, 0.5], [1.0, 1.0, 1.0], "increase strictly"),
        ([0.0, 0.5, 1.0], [1.0, 1.0, 1.0], r"within \[0, 1\)"),
        ([0.0], [1.0], "at least 2"),
        ([0.0, 0.5, 0.75], [1.0, 1.0], "differ in shape"),
        ([[0.0, 0.5]], [[1.0, 1.0]], "one-dimensional"),
    ],
    ids=["not-from-zero", "decreasing", "repeated", "reaches-one", "one-point", "shape-mismatch", "two-dimensional"],
)
def test_malformed_grids_are_refused(alphas: list[float], losses: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summarize_segment(alphas, losses, 1.0)


@pytest.mark.parametrize("keyword", ["barrier_relative_tolerance", "barrier_absolute_tolerance"])
def test_negative_tolerances_are_refused(keyword: str) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        summarize_segment(GRID4, [1.0] * 4, 1.0, **{keyword: -1e-9})


def test_tied_minimum_at_the_start_is_not_an_interior_floor() -> None:
    # Equal minima at α = 0 and inside: argmin takes α = 0, so no interior floor is claimed.
    summary = summarize_segment(GRID4, [0.5, 0.5, 0.9, 0.9], 0.9)
    assert summary.alpha_star == 0.0 and not summary.interior_floor
