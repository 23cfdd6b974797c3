"""The loss along one update step θ_t → θ_{t+1}: valley floor, heights and barriers.

Pure functions of the segment losses L(θ_t + α(θ_{t+1} − θ_t)) measured on an α grid. The
grid holds K points in [0, 1) (the authors' 0, 0.1, …, 0.9 by default) and the loss at α = 1
is supplied separately, because it is the next segment's α = 0 and is never recomputed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sgdwalk.instrument.tolerances import (
    BARRIER_ABSOLUTE_TOLERANCE,
    BARRIER_RELATIVE_TOLERANCE,
    FLOOR_RELATIVE_TOLERANCE,
)

#: The authors' grid: 10 points 0, 0.1, …, 0.9 (α = 1 is the next segment's α = 0).
DEFAULT_NUM_ALPHAS: int = 10


def alpha_grid(num_alphas: int = DEFAULT_NUM_ALPHAS) -> NDArray[np.float64]:
    """K uniformly spaced α in [0, 1): 0, 1/K, …, (K−1)/K.

    >>> alpha_grid(4).tolist()
    [0.0, 0.25, 0.5, 0.75]
    """
    if not isinstance(num_alphas, (int, np.integer)) or isinstance(num_alphas, bool):
        raise TypeError(f"num_alphas must be an int, got {type(num_alphas).__name__}")
    if num_alphas < 2:
        raise ValueError(
            f"num_alphas must be at least 2 (a segment needs its start and an interior point), got {num_alphas}"
        )
    return np.arange(num_alphas, dtype=np.float64) / float(num_alphas)


@dataclass(frozen=True)
class SegmentSummary:
    """What one segment's losses say about the valley under the step.

    Attributes:
        loss_start: L(θ_t), the loss at α = 0.
        loss_end: L(θ_{t+1}), the loss at α = 1.
        floor: the valley floor y_t, the minimum of the loss over the grid and α = 1.
        alpha_star: the α of that minimum.
        interior_floor: whether 0 < α* < 1 with the floor below both endpoints.
        floor_refined: floor from a parabola through the grid minimum and its neighbours
            (exact when the segment loss is quadratic in α); equals ``floor`` when the minimum
            sits at an endpoint.
        alpha_star_refined: the α of ``floor_refined``.
        height_start: L(θ_t) − y_t, the height of the iterate above the floor.
        height_end: L(θ_{t+1}) − y_t.
        barrier: whether some interior grid loss exceeds max(L(θ_t), L(θ_{t+1})) by more
            than the tolerance (the paper's footnote 2).
        barrier_height: that excess (max interior loss − higher endpoint), 0.0 when there is
            no barrier.
        barrier_alpha: the α of the highest interior point when there is a barrier, else None.
    """

    loss_start: float
    loss_end: float
    floor: float
    alpha_star: float
    interior_floor: bool
    floor_refined: float
    alpha_star_refined: float
    height_start: float
    height_end: float
    barrier: bool
    barrier_height: float
    barrier_alpha: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _validated_profile(
    alphas: ArrayLike, losses: ArrayLike, loss_end: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The full profile (grid plus α = 1) as float64 arrays, after checking the input."""
    alpha_values = np.asarray(alphas, dtype=np.float64)
    loss_values = np.asarray(losses, dtype=np.float64)
    if alpha_values.ndim != 1 or loss_values.ndim != 1:
        raise ValueError("alphas and losses must be one-dimensional")
    if alpha_values.shape != loss_values.shape:
        raise ValueError(f"alphas {alpha_values.shape} and losses {loss_values.shape} differ in shape")
    if alpha_values.size < 2:
        raise ValueError(f"a segment needs at least 2 grid points, got {alpha_values.size}")
    if alpha_values[0] != 0.0:
        raise ValueError(f"the grid must start at α = 0 (the iterate θ_t), got {alpha_values[0]}")
    if not (np.all(np.diff(alpha_values) > 0) and alpha_values[-1] < 1.0):
        raise ValueError("the grid must increase strictly within [0, 1); α = 1 is passed as loss_end")
    if not (np.all(np.isfinite(loss_values)) and math.isfinite(loss_end)):
        raise ValueError("segment losses must be finite (a non-finite loss means the run diverged)")
    return np.append(alpha_values, 1.0), np.append(loss_values, float(loss_end))


def _parabola_vertex(alphas: NDArray[np.float64], losses: NDArray[np.float64], index: int) -> tuple[float, float]:
    """Vertex of the parabola through points index−1, index, index+1 (exact for quadratics)."""
    a0, a1, a2 = (float(a) for a in alphas[index - 1 : index + 2])
    # Work in units of the largest of the three losses: divided differences of losses near
    # float64's maximum (a slowly diverging run) would overflow.
    scale = float(np.max(np.abs(losses[index - 1 : index + 2])))
    if scale == 0.0:
        return a1, 0.0
    grid_floor = float(losses[index])
    y0, y1, y2 = (float(y) / scale for y in losses[index - 1 : index + 2])
    # Newton's divided differences: y = y0 + d01 (a − a0) + curvature (a − a0)(a − a1).
    d01 = (y1 - y0) / (a1 - a0)
    d12 = (y2 - y1) / (a2 - a1)
    curvature = (d12 - d01) / (a2 - a0)
    if not curvature > 0.0:
        return a1, grid_floor
    vertex = 0.5 * (a0 + a1) - d01 / (2.0 * curvature)
    vertex = min(max(vertex, a0), a2)
    value = y0 + d01 * (vertex - a0) + curvature * (vertex - a0) * (vertex - a1)
    # Never above the grid floor it refines (scaling back may round up by an ulp).
    return float(vertex), min(float(value * scale), grid_floor)


def summarize_segment(
    alphas: ArrayLike,
    losses: ArrayLike,
    loss_end: float,
    *,
    barrier_relative_tolerance: float = BARRIER_RELATIVE_TOLERANCE,
    barrier_absolute_tolerance: float = BARRIER_ABSOLUTE_TOLERANCE,
) -> SegmentSummary:
    """Floor, heights and barrier of one segment.

    Args:
        alphas: the grid, strictly increasing in [0, 1), starting at 0.
        losses: L(θ_t(α)) at each grid point.
        loss_end: L(θ_{t+1}), the loss at α = 1.
        barrier_relative_tolerance / barrier_absolute_tolerance: an interior loss counts as a
            barrier only when it exceeds the higher endpoint by more than
            ``absolute + relative · |higher endpoint|``.
    """
    if barrier_relative_tolerance < 0 or barrier_absolute_tolerance < 0:
        raise ValueError("barrier tolerances must be non-negative")
    profile_alphas, profile_losses = _validated_profile(alphas, losses, loss_end)
    loss_start = float(profile_losses[0])
    last = profile_losses.size - 1

    floor_index = int(np.argmin(profile_losses))
    floor = float(profile_losses[floor_index])
    endpoints_low = min(loss_start, float(loss_end))
    interior_floor = 0 < floor_index < last and floor < endpoints_low - FLOOR_RELATIVE_TOLERANCE * abs(endpoints_low)
    if 0 < floor_index < last:
        alpha_refined, floor_refined = _parabola_vertex(profile_alphas, profile_losses, floor_index)
    else:
        alpha_refined, floor_refined = float(profile_alphas[floor_index]), floor

    endpoints_high = max(loss_start, float(loss_end))
    interior_losses = profile_losses[1:last]
    peak_offset = int(np.argmax(interior_losses))
    excess = float(interior_losses[peak_offset]) - endpoints_high
    threshold = barrier_absolute_tolerance + barrier_relative_tolerance * abs(endpoints_high)
    barrier = excess > threshold

    return SegmentSummary(
        loss_start=loss_start,
        loss_end=float(loss_end),
        floor=floor,
        alpha_star=float(profile_alphas[floor_index]),
        interior_floor=bool(interior_floor),
        floor_refined=floor_refined,
        alpha_star_refined=alpha_refined,
        height_start=loss_start - floor,
        height_end=float(loss_end) - floor,
        barrier=bool(barrier),
        barrier_height=excess if barrier else 0.0,
        barrier_alpha=float(profile_alphas[1 + peak_offset]) if barrier else None,
    )
