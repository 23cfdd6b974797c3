"""How sure one segment's measurement is: standard errors and a barrier test.

Every loss of a segment is a mean over the samples of the measurement set, an estimate of
the loss over the distribution those samples were drawn from (the training set, when the
measurement set is a random part of it). The points of a segment are measured on the same
samples, so differences between them carry the standard error of the per-sample
differences (``paired``).

What the errors mean, and how they treat the data-chosen points:

- ``barrier_excess_se`` is the standard error of the reported difference *at the grid point
  the data chose* (the barrier's peak): exact for a fixed choice.
- ``height_start_se``, ``height_end_se`` and ``floor_depth_se`` cover the choice of the
  floor too, in exact and precision-targeted records alike. Taken at the floor the data
  chose alone, they are what height ± z·se means only when the choice is clear (the floor's
  neighbours several standard errors above it); late in training near-ties are common, and
  there exact records' 95 % intervals covered 76-84 % of the time, a height of 0 coming with
  an error of 0 where the true one was not (found by a second pair of eyes on Fashion-MNIST,
  130 disjoint sets per step); a stopping rule that reads the errors would stop where they
  are optimistic. Candidates C are the grid
  points whose loss lies within z·se of the measured floor (z one-sided at
  ``FLOOR_CANDIDATE_CONFIDENCE``): the true floor a* is among them except with probability
  1 − that confidence. Write the height as max_a D_a with D_a = L_end − L_a; the data's
  floor â maximises the estimates D̂. Then D̂_â − D_a* lies between D̂_a* − D_a* (as
  D̂_â ≥ D̂_a*) and D̂_â − D_â (as D_a* ≥ D_â): the reported height errs by at most the
  larger error of two candidates, so its error is reported as max over a in C of
  se(end, a). The floor depth does the same over the ends that could be the lower one. A
  height of 0 (the floor at that end) then gets an error of 0 only when no other point
  could be the floor. The errors are conservative where candidates tie (± 1 se then holds
  more than 68 %); ``tests/test_targeted_coverage_real.py`` measures the 95 % coverage reached.
- The barrier test does not depend on any choice: a barrier means that some interior point
  lies above *both* ends, so the test looks at every difference "interior point minus end"
  with the corrections its logic needs (``barrier_test``), and its error rate holds whatever
  the data pick, including across the repeated looks of precision-targeted measurement
  (``looks``: the error budget is split evenly across the planned looks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sgdwalk.instrument.paired import difference_standard_error
from sgdwalk.instrument.tolerances import (
    BARRIER_ABSOLUTE_TOLERANCE,
    BARRIER_RELATIVE_TOLERANCE,
    BARRIER_TEST_CONFIDENCE,
    FLOOR_CANDIDATE_CONFIDENCE,
)

BarrierTest = Literal["crossed", "not crossed", "undecided"]
BARRIER_TEST_OUTCOMES: tuple[BarrierTest, ...] = ("crossed", "not crossed", "undecided")


@dataclass(frozen=True)
class SegmentUncertainty:
    """Standard errors of one segment's measured quantities, and its barrier test.

    Attributes:
        samples: how many samples of the measurement set the segment was measured on.
        segment_loss_se: standard error of the mean loss at each point (grid, then α = 1).
        segment_floor_se: standard error of each point's height above the floor,
            L(α) − y_t (0 at the floor itself): how sure the valley's shape is, which the
            pairing makes far smaller than the losses' own errors.
        height_start_se / height_end_se: of L(θ_t) − y_t and L(θ_{t+1}) − y_t.
        floor_depth: min(L(θ_t), L(θ_{t+1})) − y_t, how far the floor lies below the lower end.
        floor_depth_se: its standard error.
        barrier_excess: the highest interior loss minus the higher end (negative: no barrier).
        barrier_excess_se: its standard error.
        barrier_test: "crossed" when some interior point lies above both ends by more than the
            barrier tolerance with confidence ``BARRIER_TEST_CONFIDENCE``, "not crossed" when
            every interior point lies below one end (within the tolerance) with that
            confidence, else "undecided".
    """

    samples: int
    segment_loss_se: tuple[float, ...]
    segment_floor_se: tuple[float, ...]
    height_start_se: float
    height_end_se: float
    floor_depth: float
    floor_depth_se: float
    barrier_excess: float
    barrier_excess_se: float
    barrier_test: BarrierTest

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def record_fields(self) -> dict[str, Any]:
        """The fields as ``StepRecord`` holds them: an error that is undefined (fewer than two
        samples) is None, and so is a profile of errors holding one, so a record never holds NaN."""
        return {name: _defined_or_none(value) for name, value in self.as_dict().items()}


def _defined_or_none(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, tuple):
        return value if all(math.isfinite(item) for item in value) else None
    return value


def one_sided_z(error_rate: float) -> float:
    """The normal quantile whose upper tail holds ``error_rate``."""
    if not 0.0 < error_rate < 1.0:
        raise ValueError(f"an error rate must lie in (0, 1), got {error_rate}")
    return NormalDist().inv_cdf(1.0 - error_rate)


def barrier_test(
    means: ArrayLike,
    covariance: ArrayLike,
    count: int,
    *,
    confidence: float = BARRIER_TEST_CONFIDENCE,
    looks: int = 1,
    relative_tolerance: float = BARRIER_RELATIVE_TOLERANCE,
    absolute_tolerance: float = BARRIER_ABSOLUTE_TOLERANCE,
) -> BarrierTest:
    """Decide whether the segment crosses a barrier, from paired per-sample moments.

    ``means`` and ``covariance`` are over the whole profile: the grid (α = 0 first) and then
    α = 1 last. Interior point a lies above both ends when D_a0 = L_a − L(θ_t) and
    D_a1 = L_a − L(θ_{t+1}) both exceed the tolerance τ. With δ = 1 − confidence, spent evenly
    over ``looks`` looks:

    - "crossed" when, for some a, both one-sided lower bounds exceed τ. Showing both parts
      of one point's claim needs no correction between them (an intersection-union test);
      any of the K − 1 interior points may be the one, so each gets δ / (K − 1).
    - "not crossed" when every interior point has an end it provably lies below (an upper
      bound ≤ τ). Every point must pass, so no correction across points is due
      (intersection-union again); either end may be the one, so each bound gets δ / 2.

    Each decision is wrong with probability at most δ whatever the truth, including at the
    least favourable one (an interior point exactly level with an end).
    """
    profile = np.asarray(means, dtype=np.float64)
    last = profile.size - 1
    interior = range(1, last)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if looks < 1:
        raise ValueError(f"looks must be positive, got {looks}")
    if count < 2 or last < 2:
        return "undecided"
    error_rate = (1.0 - confidence) / looks
    z_crossed = one_sided_z(error_rate / len(interior))
    z_not_crossed = one_sided_z(error_rate / 2.0)
    higher_end = max(float(profile[0]), float(profile[last]))
    tolerance = absolute_tolerance + relative_tolerance * abs(higher_end)
    crossed = False
    every_point_below_an_end = True
    for point in interior:
        above_both, below_one = True, False
        for end in (0, last):
            difference = float(profile[point] - profile[end])
            se = difference_standard_error(covariance, count, point, end)
            if not math.isfinite(se):
                return "undecided"
            above_both &= difference - z_crossed * se > tolerance
            below_one |= difference + z_not_crossed * se <= tolerance
        crossed |= above_both
        every_point_below_an_end &= below_one
    if crossed:
        return "crossed"
    return "not crossed" if every_point_below_an_end else "undecided"


def near_minimum(profile: NDArray[np.float64], indices: Sequence[int], se: Callable[[int, int], float]) -> list[int]:
    """Those of ``indices`` whose loss the data cannot tell from the lowest of them: within
    z·se of it, z one-sided at ``FLOOR_CANDIDATE_CONFIDENCE`` (the lowest itself always)."""
    lowest = min(indices, key=lambda index: (float(profile[index]), index))
    z = one_sided_z(1.0 - FLOOR_CANDIDATE_CONFIDENCE)
    # An error that is not finite (under two samples) cannot tell points apart: all stay.
    return [i for i in indices if not float(profile[i] - profile[lowest]) > z * se(i, lowest)]


def selected_floor_standard_errors(
    profile: NDArray[np.float64], se: Callable[[int, int], float]
) -> tuple[float, float, float]:
    """Errors of height_start, height_end and floor_depth that cover the choice of the floor
    (and of the lower end): the largest difference error over the candidates (module docstring)."""
    last = profile.size - 1
    floors = near_minimum(profile, range(profile.size), se)
    lower_ends = near_minimum(profile, (0, last), se)
    return (
        max(se(0, floor) for floor in floors),
        max(se(last, floor) for floor in floors),
        max(se(end, floor) for end in lower_ends for floor in floors),
    )


def segment_uncertainty(
    means: ArrayLike,
    covariance: ArrayLike,
    count: int,
    *,
    confidence: float = BARRIER_TEST_CONFIDENCE,
    looks: int = 1,
    relative_tolerance: float = BARRIER_RELATIVE_TOLERANCE,
    absolute_tolerance: float = BARRIER_ABSOLUTE_TOLERANCE,
) -> SegmentUncertainty:
    """Standard errors of a segment's heights, floor depth and barrier excess, and its test.

    The floor and the peak are chosen as ``segment.summarize_segment`` chooses them: the
    lowest point of the whole profile, and the highest interior point. The errors of the
    heights and the floor depth also cover which point is the floor
    (``selected_floor_standard_errors``).
    """
    profile = np.asarray(means, dtype=np.float64)
    sigma = np.asarray(covariance, dtype=np.float64)
    if profile.ndim != 1 or profile.size < 3 or sigma.shape != (profile.size, profile.size):
        raise ValueError(f"means {profile.shape} and covariance {sigma.shape} must cover a profile of 3+ points")
    last = profile.size - 1
    floor_index = int(np.argmin(profile))
    lower_end = 0 if profile[0] <= profile[last] else last
    higher_end = last if lower_end == 0 else 0
    peak_index = 1 + int(np.argmax(profile[1:last]))

    def se(first: int, second: int) -> float:
        return difference_standard_error(sigma, count, first, second) if count >= 2 else math.nan

    height_start_se, height_end_se, floor_depth_se = selected_floor_standard_errors(profile, se)
    point_se = tuple(
        math.sqrt(max(float(sigma[p, p]), 0.0) / count) if count >= 2 else math.nan for p in range(profile.size)
    )
    return SegmentUncertainty(
        samples=int(count),
        segment_loss_se=point_se,
        segment_floor_se=tuple(se(p, floor_index) for p in range(profile.size)),
        height_start_se=height_start_se,
        height_end_se=height_end_se,
        floor_depth=float(profile[lower_end] - profile[floor_index]),
        floor_depth_se=floor_depth_se,
        barrier_excess=float(profile[peak_index] - profile[higher_end]),
        barrier_excess_se=se(peak_index, higher_end),
        barrier_test=barrier_test(
            profile,
            sigma,
            count,
            confidence=confidence,
            looks=looks,
            relative_tolerance=relative_tolerance,
            absolute_tolerance=absolute_tolerance,
        ),
    )
