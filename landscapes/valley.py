"""A valley: steep quadratic walls around a one-dimensional floor, with bumps on the floor.

θ = (x, y_1, …, y_{d−1}) and

    L(θ) = ½ a ‖y‖² + ½ μ x² + Σ_k h_k · b((x − x_k) / w_k),   b(u) = (1 − u²)^p for |u| < 1,

b = 0 elsewhere. p = 3 (default) makes each bump C² (its Hessian is continuous), p = 2 the
C¹ profile h(1 − u²)². A bump has its peak at x_k with height exactly h_k and support
(x_k − w_k, x_k + w_k), so a segment along the floor (y = 0, μ = 0) that spans one bump
fully meets a barrier of exactly h_k.

Exact loss, gradient and Hessian are in numpy. ``barrier_on_segment`` answers in closed
form where one exists and otherwise by an independent reference (dense evaluation refined
by ``scipy.optimize.minimize_scalar``), never with sgdwalk's grid code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar
from torch import nn

from landscapes.quadratic import DeterministicSamples, as_vector

__all__ = ["BarrierAnswer", "Bump", "Valley"]

BumpSmoothness = Literal[1, 2]

# max |b''(u)| over u: p = 2: b'' = 12u² − 4 ∈ [−4, 8]; p = 3: b'' = (1 − u²)(30u² − 6) ∈ [−6, 4.8].
_PROFILE_CURVATURE_BOUND: dict[int, float] = {2: 8.0, 3: 6.0}
# Points of the reference's dense pass over α: spacing 1/4096 puts a sample within 1.2e-4 of
# any interior maximum, well inside the basin that the scalar refinement then polishes.
_REFERENCE_DENSE_POINTS = 4097
# The refinement's α tolerance: a maximum's value is off by ½ f'' δα², negligible at 1e-12.
_REFERENCE_ALPHA_TOLERANCE = 1e-12
# An excess counts as a crossed barrier only above float64 rounding of the profile values:
# a few ulps (64 eps) of the largest loss magnitude along the segment.
_REFERENCE_ROUNDING_ULPS = 64.0


@dataclass(frozen=True)
class Bump:
    """h · b((x − position) / half_width) on the floor."""

    position: float
    height: float
    half_width: float

    def __post_init__(self) -> None:
        if not self.half_width > 0.0:
            raise ValueError(f"a bump needs a positive half_width, got {self.half_width}")

    def covers(self, x: float) -> bool:
        """Whether x is inside the open support (x_k − w_k, x_k + w_k)."""
        return abs(x - self.position) < self.half_width


@dataclass(frozen=True)
class BarrierAnswer:
    """The exact barrier on a segment: the paper's excess max_{0<α<1} L(θ(α)) − max(L(θ_a), L(θ_b)).

    Attributes:
        crossed: whether the excess is positive (beyond float64 rounding for a reference).
        height: the excess when crossed, else 0.0.
        alpha: where the interior maximum is (None when not crossed).
        method: "closed form" or "reference" (dense + scalar refinement).
    """

    crossed: bool
    height: float
    alpha: float | None
    method: str


class Valley(nn.Module, DeterministicSamples):
    """Walls ½ a ‖y‖², floor ½ μ x², bumps h_k b((x − x_k)/w_k); θ = (x, y).

    ``forward(inputs)`` returns L(θ) once per row of ``inputs`` (a dummy [1, 1] tensor from
    ``measurement_set``).

    Args:
        wall_curvature: a, the curvature across the valley (along every y).
        floor_curvature: μ, the curvature along the floor (0: a flat floor).
        bumps: (position, height, half_width) triples or ``Bump``s.
        dim: d ≥ 2 (one floor coordinate, d − 1 wall coordinates).
        smoothness: 2 for the C² profile (1 − u²)³, 1 for the C¹ profile (1 − u²)².
        start: the initial value of ``theta``, default (x = −1, y = 1, …).
    """

    def __init__(
        self,
        wall_curvature: float,
        floor_curvature: float = 0.0,
        bumps: Sequence[Bump | tuple[float, float, float]] = (),
        dim: int = 2,
        smoothness: BumpSmoothness = 2,
        start: ArrayLike | None = None,
    ) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a valley needs dim >= 2 (a floor and at least one wall), got {dim}")
        if smoothness not in (1, 2):
            raise ValueError(f"smoothness must be 1 (C¹ bumps) or 2 (C² bumps), got {smoothness}")
        self.wall_curvature = float(wall_curvature)
        self.floor_curvature = float(floor_curvature)
        self.bumps: tuple[Bump, ...] = tuple(b if isinstance(b, Bump) else Bump(*map(float, b)) for b in bumps)
        self.dim = int(dim)
        self.profile_power = 3 if smoothness == 2 else 2
        initial = np.concatenate([[-1.0], np.ones(dim - 1)]) if start is None else as_vector(start, dim)
        self.theta = nn.Parameter(torch.tensor(initial, dtype=torch.float64))

    # ------------------------------------------------------------------ the model
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x, y = self.theta[0], self.theta[1:]
        value = 0.5 * self.wall_curvature * torch.dot(y, y) + 0.5 * self.floor_curvature * x * x
        for bump in self.bumps:
            u = (x - bump.position) / bump.half_width
            value = value + bump.height * torch.clamp(1.0 - u * u, min=0.0) ** self.profile_power
        return value.expand(inputs.shape[0])

    # ------------------------------------------------------------------ the bump profile
    def _profile(self, u: float) -> tuple[float, float, float]:
        """b(u), b'(u), b''(u) (all zero outside |u| < 1)."""
        if abs(u) >= 1.0:
            return 0.0, 0.0, 0.0
        p = self.profile_power
        inside = 1.0 - u * u
        value = inside**p
        first = -2.0 * p * u * inside ** (p - 1)
        second = -2.0 * p * inside ** (p - 1) + 4.0 * p * (p - 1) * u * u * inside ** (p - 2)
        return value, first, second

    def floor_profile(self, x: float) -> float:
        """L along the floor (y = 0): ½ μ x² + Σ bumps."""
        total = 0.5 * self.floor_curvature * x * x
        for bump in self.bumps:
            total += bump.height * self._profile((x - bump.position) / bump.half_width)[0]
        return total

    # ------------------------------------------------------------------ exact answers
    def loss(self, theta: ArrayLike | torch.Tensor) -> float:
        point = as_vector(theta, self.dim)
        return 0.5 * self.wall_curvature * float(point[1:] @ point[1:]) + self.floor_profile(float(point[0]))

    def gradient(self, theta: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        point = as_vector(theta, self.dim)
        x = float(point[0])
        gradient = np.empty(self.dim)
        gradient[1:] = self.wall_curvature * point[1:]
        gradient[0] = self.floor_curvature * x + sum(
            bump.height * self._profile((x - bump.position) / bump.half_width)[1] / bump.half_width
            for bump in self.bumps
        )
        return gradient

    def hessian(self, theta: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        point = as_vector(theta, self.dim)
        x = float(point[0])
        hessian = np.diag(np.full(self.dim, self.wall_curvature))
        hessian[0, 0] = self.floor_curvature + sum(
            bump.height * self._profile((x - bump.position) / bump.half_width)[2] / bump.half_width**2
            for bump in self.bumps
        )
        return hessian

    @property
    def curvature_bound(self) -> float:
        """M ≥ ‖∇²L(θ)‖ everywhere: max(a, |μ| + Σ |h_k| max|b''| / w_k²)."""
        bound = _PROFILE_CURVATURE_BOUND[self.profile_power]
        floor = abs(self.floor_curvature) + sum(abs(b.height) * bound / b.half_width**2 for b in self.bumps)
        return max(abs(self.wall_curvature), floor)

    def segment_curvature_bound(self, start: ArrayLike | torch.Tensor, end: ArrayLike | torch.Tensor) -> float:
        """M ≥ |d²/dα² L(start + α d)| on the whole segment, d = end − start.

        The Hessian is diagonal: ∂²L/∂x² ∈ μ ± Σ |h_k| max|b''| / w_k², ∂²L/∂y_i² = a, so the
        second derivative along d is at most d_x² (|μ| + Σ …) + ‖d_y‖² |a|.
        """
        direction = as_vector(end, self.dim) - as_vector(start, self.dim)
        bound = _PROFILE_CURVATURE_BOUND[self.profile_power]
        floor = abs(self.floor_curvature) + sum(abs(b.height) * bound / b.half_width**2 for b in self.bumps)
        return float(direction[0] ** 2 * floor + direction[1:] @ direction[1:] * abs(self.wall_curvature))

    @property
    def minimizer(self) -> NDArray[np.float64] | None:
        """θ = 0 when it is the unique global minimizer in closed form, else None.

        With a > 0, μ > 0, every bump height ≥ 0 and no bump covering x = 0, L ≥ ½μx² + ½a‖y‖²
        ≥ 0 = L(0) with equality only at 0. Other cases have no closed form here (μ = 0:
        a whole stretch of floor is minimal; a dip h < 0: the minimum moves).
        """
        if self.wall_curvature <= 0.0 or self.floor_curvature <= 0.0:
            return None
        if any(b.height < 0.0 or b.covers(0.0) for b in self.bumps):
            return None
        return np.zeros(self.dim)

    def bump_peaks(self) -> list[tuple[NDArray[np.float64], float]]:
        """(point on the floor, exact loss there) at each bump's peak x_k, y = 0."""
        peaks = []
        for bump in self.bumps:
            point = np.zeros(self.dim)
            point[0] = bump.position
            peaks.append((point, self.loss(point)))
        return peaks

    def _supports_disjoint(self) -> bool:
        ordered = sorted(self.bumps, key=lambda b: b.position)
        return all(
            left.position + left.half_width <= right.position - right.half_width for left, right in pairwise(ordered)
        )

    def barrier_on_segment(self, start: ArrayLike | torch.Tensor, end: ArrayLike | torch.Tensor) -> BarrierAnswer:
        """The barrier on θ(α) = start + α (end − start), α ∈ (0, 1).

        Closed forms: (i) no bumps and μ ≥ 0: L is convex, no barrier; (ii) both ends on the
        floor (y = 0), μ = 0, disjoint bump supports, both ends outside every support: the
        profile is 0 at the ends and each bump whose peak lies strictly between them is
        spanned fully, so the barrier is the largest such positive height, exactly.
        Otherwise the reference: dense evaluation and bounded scalar maximisation.
        """
        a, b = as_vector(start, self.dim), as_vector(end, self.dim)
        if not self.bumps and self.floor_curvature >= 0.0 and self.wall_curvature >= 0.0:
            return BarrierAnswer(False, 0.0, None, "closed form")
        on_floor = not np.any(a[1:]) and not np.any(b[1:])
        ends_outside = not any(bump.covers(float(a[0])) or bump.covers(float(b[0])) for bump in self.bumps)
        if on_floor and self.floor_curvature == 0.0 and ends_outside and self._supports_disjoint():
            low, high = sorted((float(a[0]), float(b[0])))
            spanned = [bump for bump in self.bumps if low < bump.position < high and bump.height > 0.0]
            if not spanned:
                return BarrierAnswer(False, 0.0, None, "closed form")
            tallest = max(spanned, key=lambda bump: bump.height)
            alpha = (tallest.position - float(a[0])) / (float(b[0]) - float(a[0]))
            return BarrierAnswer(True, tallest.height, alpha, "closed form")
        return self.reference_barrier(a, b)

    def losses_along(
        self, start: ArrayLike | torch.Tensor, end: ArrayLike | torch.Tensor, alphas: ArrayLike
    ) -> NDArray[np.float64]:
        """L(start + α (end − start)) for each α, vectorised (same formula as ``loss``)."""
        a, b = as_vector(start, self.dim), as_vector(end, self.dim)
        alpha = np.asarray(alphas, dtype=np.float64).reshape(-1, 1)
        points = a + alpha * (b - a)
        x, y = points[:, 0], points[:, 1:]
        values = 0.5 * self.wall_curvature * np.sum(y * y, axis=1) + 0.5 * self.floor_curvature * x * x
        for bump in self.bumps:
            inside = np.clip(1.0 - ((x - bump.position) / bump.half_width) ** 2, 0.0, None)
            values = values + bump.height * inside**self.profile_power
        return values

    def reference_barrier(self, start: ArrayLike | torch.Tensor, end: ArrayLike | torch.Tensor) -> BarrierAnswer:
        """Dense evaluation of the exact loss over α ∈ (0, 1), refined by minimize_scalar."""
        a, b = as_vector(start, self.dim), as_vector(end, self.dim)

        def profile(alpha: float) -> float:
            return float(self.losses_along(a, b, [alpha])[0])

        loss_start, loss_end = self.loss(a), self.loss(b)
        alphas = np.linspace(0.0, 1.0, _REFERENCE_DENSE_POINTS)
        values = self.losses_along(a, b, alphas)
        values[0], values[-1] = loss_start, loss_end
        interior = values[1:-1]
        best_offset = int(np.argmax(interior))
        best_alpha, best_value = float(alphas[best_offset + 1]), float(interior[best_offset])
        # Refine every strict local maximum of the dense pass: a barrier may have several peaks.
        # (Strict on the left, so a flat stretch of floor is not refined point by point.)
        for offset in np.flatnonzero((interior > values[:-2]) & (interior >= values[2:])):
            index = int(offset) + 1
            result = minimize_scalar(
                lambda alpha: -profile(alpha),
                bounds=(float(alphas[index - 1]), float(alphas[index + 1])),
                method="bounded",
                options={"xatol": _REFERENCE_ALPHA_TOLERANCE},
            )
            if -float(result.fun) > best_value:
                best_alpha, best_value = float(result.x), -float(result.fun)
        excess = best_value - max(loss_start, loss_end)
        rounding = _REFERENCE_ROUNDING_ULPS * float(np.finfo(np.float64).eps) * float(np.max(np.abs(values)))
        if excess > rounding:
            return BarrierAnswer(True, float(excess), best_alpha, "reference")
        return BarrierAnswer(False, 0.0, None, "reference")
