"""The quadratic L(θ) = ½ (θ − θ*)ᵀ H (θ − θ*), H = Q diag(λ) Qᵀ, and its exact answers.

The module is a model like any other (one float64 parameter ``theta``, a ``forward`` that
returns per-sample losses), so the tracker measures it exactly as it measures a network.
The exact answers (loss, gradient, Hessian, eigen-coordinates, the parabola of the loss
along any segment, the closed-form gradient cosine of docs/theory.md#the-cosine) are computed in numpy from
the spectrum, independently of torch and of sgdwalk.

``QuadraticAnswers`` holds the answers that every quadratic shares; ``NoisyQuadratic``
reuses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from sgdwalk import MeasurementSet, outputs_are_losses

__all__ = [
    "Quadratic",
    "QuadraticAnswers",
    "Rotation",
    "SegmentParabola",
    "as_vector",
    "orthogonal_matrix",
]

#: None: the identity (eigenvectors are the coordinate axes); int: the seed of a Haar-random
#: rotation; an array: the orthogonal matrix Q itself (its columns are the eigenvectors).
Rotation = int | ArrayLike | None

# An explicit Q must be orthogonal to this accuracy (a few hundred ulps for d up to ~100).
_ORTHOGONALITY_TOLERANCE = 1e-12


def as_vector(theta: ArrayLike | torch.Tensor, dimension: int | None = None) -> NDArray[np.float64]:
    """``theta`` as a flat float64 numpy vector (torch tensors are detached and copied)."""
    if isinstance(theta, torch.Tensor):
        theta = theta.detach().cpu().double().numpy()
    vector = np.array(theta, dtype=np.float64).reshape(-1)
    if dimension is not None and vector.size != dimension:
        raise ValueError(f"expected a vector of {dimension} coordinates, got {vector.size}")
    return vector


def orthogonal_matrix(dimension: int, rotation: Rotation) -> NDArray[np.float64]:
    """Q for ``rotation`` (see ``Rotation``); a seed gives a Haar-distributed Q."""
    if rotation is None:
        return np.eye(dimension)
    if isinstance(rotation, (int, np.integer)) and not isinstance(rotation, bool):
        gaussian = np.random.default_rng(int(rotation)).standard_normal((dimension, dimension))
        q, r = np.linalg.qr(gaussian)
        # Fixing the signs of R's diagonal makes Q Haar-distributed (Mezzadri 2007).
        return q * np.sign(np.diag(r))
    matrix = np.array(rotation, dtype=np.float64)
    if matrix.shape != (dimension, dimension):
        raise ValueError(f"rotation must be {dimension}x{dimension}, got {matrix.shape}")
    if not np.allclose(matrix.T @ matrix, np.eye(dimension), rtol=0.0, atol=_ORTHOGONALITY_TOLERANCE):
        raise ValueError("rotation must be an orthogonal matrix (QᵀQ = I)")
    return matrix


def _geometric_sum(ratio: NDArray[np.float64], terms: NDArray[np.int64]) -> NDArray[np.float64]:
    """Σ_{k<n} ratio^k, written so that ratio = 1 (a flat direction) gives n, not 0/0."""
    is_one = ratio == 1.0
    return np.where(is_one, terms.astype(np.float64), (1.0 - ratio**terms) / np.where(is_one, 2.0, 1.0 - ratio))


@dataclass(frozen=True)
class SegmentParabola:
    """The exact loss along a segment θ(α) = θ_a + α (θ_b − θ_a) of a quadratic.

    L(θ(α)) = loss_start + slope·α + ½·curvature·α², α ∈ [0, 1].

    Attributes:
        loss_start / loss_end: L at α = 0 and α = 1.
        slope: dL/dα at α = 0, (θ_b − θ_a)ᵀ ∇L(θ_a).
        curvature: d²L/dα², (θ_b − θ_a)ᵀ H (θ_b − θ_a).
        alpha_star: the parabola's vertex −slope/curvature (None when curvature ≤ 0: no
            minimum on the line).
        interior_floor: whether the vertex is a minimum strictly inside (0, 1).
        floor: the minimum of the loss over α ∈ [0, 1] (the continuous valley floor).
        alpha_floor: where that minimum is.
        depth: loss_start − floor, the height of θ_a above the floor.
        height_end: loss_end − floor.
    """

    loss_start: float
    loss_end: float
    slope: float
    curvature: float
    alpha_star: float | None
    interior_floor: bool
    floor: float
    alpha_floor: float
    depth: float
    height_end: float

    @classmethod
    def from_coefficients(cls, loss_start: float, slope: float, curvature: float) -> SegmentParabola:
        loss_end = loss_start + slope + 0.5 * curvature
        alpha_star = -slope / curvature if curvature > 0.0 else None
        interior = alpha_star is not None and 0.0 < alpha_star < 1.0
        if interior:
            assert alpha_star is not None
            alpha_floor = alpha_star
            # The vertex value in closed form: L(θ_a) − slope²/(2·curvature).
            floor = loss_start - slope * slope / (2.0 * curvature)
        elif loss_end < loss_start:
            alpha_floor, floor = 1.0, loss_end
        else:
            alpha_floor, floor = 0.0, loss_start
        return cls(
            loss_start=loss_start,
            loss_end=loss_end,
            slope=slope,
            curvature=curvature,
            alpha_star=alpha_star,
            interior_floor=interior,
            floor=floor,
            alpha_floor=alpha_floor,
            depth=loss_start - floor,
            height_end=loss_end - floor,
        )

    def loss_at(self, alpha: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
        return self.loss_start + self.slope * alpha + 0.5 * self.curvature * alpha * alpha

    def grid_floor_error_bound(self, num_alphas: int) -> float:
        """How far above the true floor the minimum over a uniform grid of spacing 1/K can be.

        The grid (with α = 1) has a point within Δ/2 = 1/(2K) of any α, and the parabola
        rises by ½·curvature·(α − α*)² from its vertex: at most curvature·Δ²/8.
        """
        spacing = 1.0 / num_alphas
        return max(self.curvature, 0.0) * spacing * spacing / 8.0


class QuadraticAnswers:
    """Exact answers shared by every quadratic with Hessian ``hessian_matrix``.

    Subclasses set ``eigenvalues`` (λ, shape [d]), ``eigenvectors`` (Q, columns) and
    ``hessian_matrix`` (Q diag(λ) Qᵀ), and define ``gradient``/``loss``.
    """

    eigenvalues: NDArray[np.float64]
    eigenvectors: NDArray[np.float64]
    hessian_matrix: NDArray[np.float64]

    @property
    def dimension(self) -> int:
        return int(self.eigenvalues.size)

    @property
    def stationary_point(self) -> NDArray[np.float64]:
        raise NotImplementedError

    def loss(self, theta: ArrayLike | torch.Tensor) -> float:
        raise NotImplementedError

    def gradient(self, theta: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """∇L(θ) = H (θ − θ*)."""
        return self.hessian_matrix @ (as_vector(theta, self.dimension) - self.stationary_point)

    def hessian(self, theta: ArrayLike | torch.Tensor | None = None) -> NDArray[np.float64]:
        """H, the same everywhere (``theta`` is accepted for a uniform interface)."""
        del theta
        return self.hessian_matrix.copy()

    def eigen_coordinates(self, theta: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """c = Qᵀ (θ − θ*): the iterate's offset along each eigendirection."""
        return self.eigenvectors.T @ (as_vector(theta, self.dimension) - self.stationary_point)

    def gd_step(self, theta: ArrayLike | torch.Tensor, lr: float) -> NDArray[np.float64]:
        """θ − η ∇L(θ)."""
        return as_vector(theta, self.dimension) - lr * self.gradient(theta)

    def gd_damping_factors(self, lr: float) -> NDArray[np.float64]:
        """1 − ηλ_i: GD multiplies the i-th eigen-coordinate by this each step (docs/theory.md)."""
        return 1.0 - lr * self.eigenvalues

    def gd_gradient_cosine(self, theta: ArrayLike | torch.Tensor, lr: float) -> float:
        """cos(∇L(θ), ∇L(θ − η∇L(θ))) by the closed form of docs/theory.md#the-cosine.

        Σ c_i²λ_i²(1−ηλ_i) / sqrt(Σ c_i²λ_i² · Σ c_i²λ_i²(1−ηλ_i)²), c = eigen-coordinates
        of θ; 0.0 when either gradient is zero (as ``sgdwalk.cosine`` reports it).
        """
        weights = (self.eigen_coordinates(theta) * self.eigenvalues) ** 2
        damping = self.gd_damping_factors(lr)
        denominator = math.sqrt(float(np.sum(weights)) * float(np.sum(weights * damping**2)))
        if denominator == 0.0:
            return 0.0
        return float(np.sum(weights * damping)) / denominator

    def effective_curvature(self, direction: ArrayLike | torch.Tensor) -> float:
        """λ_eff = gᵀHg / ‖g‖², the curvature along ``direction``."""
        g = as_vector(direction, self.dimension)
        return float(g @ self.hessian_matrix @ g) / float(g @ g)

    def segment_parabola(self, start: ArrayLike | torch.Tensor, end: ArrayLike | torch.Tensor) -> SegmentParabola:
        """The exact loss profile along the segment from ``start`` to ``end``."""
        a = as_vector(start, self.dimension)
        d = as_vector(end, self.dimension) - a
        return SegmentParabola.from_coefficients(
            loss_start=self.loss(a),
            slope=float(d @ self.gradient(a)),
            curvature=float(d @ self.hessian_matrix @ d),
        )

    def step_parabola(
        self, theta: ArrayLike | torch.Tensor, direction: ArrayLike | torch.Tensor, lr: float
    ) -> SegmentParabola:
        """The segment of the step θ → θ − η g, in the closed forms of docs/theory.md#the-loss-along-a-step.

        α* = gᵀ∇L / (η gᵀHg); with g = ∇L that is 1/(ηλ_eff), and the depth below θ is
        (gᵀ∇L)² / (2 gᵀHg) = ‖g‖²/(2λ_eff).
        """
        g = as_vector(direction, self.dimension)
        return SegmentParabola.from_coefficients(
            loss_start=self.loss(theta),
            slope=-lr * float(g @ self.gradient(theta)),
            curvature=lr * lr * float(g @ self.hessian_matrix @ g),
        )

    def expected_excess_loss_noisy_gd(
        self,
        start: ArrayLike | torch.Tensor,
        lr: float,
        steps: int,
        direction_variances: ArrayLike,
    ) -> float:
        """E[L(θ_t)] − L(θ*) after ``steps`` steps of θ ← θ − η (∇L + ξ), Cov ξ = C.

        ``direction_variances`` are v_i = q_iᵀ C q_i, the noise variance along each
        eigenvector. Along eigendirection i, e ← (1 − ηλ_i) e − η ξ_i with ξ_i independent
        of e, so E[e_t²] = ρ_i^t e_0² + η² v_i (1 − ρ_i^t)/(1 − ρ_i), ρ_i = (1 − ηλ_i)²;
        cross-covariances never enter because the loss only reads E[e_i²]. The loss is
        ½ Σ λ_i E[e_i²]. See ``stationary_excess_loss_noisy_gd`` for t → ∞.
        """
        variances = np.broadcast_to(np.asarray(direction_variances, dtype=np.float64), self.eigenvalues.shape)
        offsets = self.eigen_coordinates(start)
        contraction = (1.0 - lr * self.eigenvalues) ** 2
        accumulated = _geometric_sum(contraction, np.full(contraction.shape, steps, dtype=np.int64))
        second_moments = contraction**steps * offsets**2 + lr * lr * variances * accumulated
        return float(0.5 * np.sum(self.eigenvalues * second_moments))

    def stationary_excess_loss_noisy_gd(self, lr: float, direction_variances: ArrayLike) -> float:
        """lim E[L] − L(θ*) for GD plus Gaussian gradient noise: Σ_{λ_i>0} η v_i / (2 (2 − ηλ_i)).

        From the recursion of ``expected_excess_loss_noisy_gd``: E[e_i²] → η v_i /
        (λ_i (2 − ηλ_i)) for 0 < ηλ_i < 2, so ½ λ_i E[e_i²] = η v_i / (2 (2 − ηλ_i)), nearly
        independent of λ_i when ηλ_i is small. A flat direction (λ_i = 0) diffuses without
        bound but costs no loss. ``inf`` when some noisy direction has no stationary state
        (ηλ_i ≥ 2 or λ_i < 0).
        """
        variances = np.broadcast_to(np.asarray(direction_variances, dtype=np.float64), self.eigenvalues.shape)
        curved = self.eigenvalues != 0.0
        noisy = variances > 0.0
        unstable = (lr * self.eigenvalues >= 2.0) | (self.eigenvalues < 0.0)
        if np.any(unstable & noisy & curved):
            return math.inf
        terms = lr * variances[curved] / (2.0 * (2.0 - lr * self.eigenvalues[curved]))
        return float(np.sum(terms))

    def averaged_excess_loss_noisy_gd(
        self,
        start: ArrayLike | torch.Tensor,
        lr: float,
        steps: Sequence[int],
        direction_variances: ArrayLike,
    ) -> tuple[float, float]:
        """Mean and standard deviation of (1/|S|) Σ_{t∈S} (L(θ_t) − L(θ*)) under GD plus noise.

        Exact for Gaussian noise whose covariance is diagonal in the eigenbasis (isotropic
        noise, or noise shaped like H): the eigen-coordinates e_j are then independent
        Gaussian processes with mean μ_t = a^t e_0, a = 1 − ηλ_j, variance V_t = η² v_j
        Σ_{k<t} a^{2k} and covariance C(t, s) = a^{s−t} V_t for t ≤ s, and for jointly
        Gaussian variables Cov(e_t², e_s²) = 2 C² + 4 μ_t μ_s C.
        """
        times = np.asarray(steps, dtype=np.int64)
        if times.ndim != 1 or times.size == 0 or np.any(times < 0):
            raise ValueError("steps must be a non-empty sequence of non-negative step indices")
        variances = np.broadcast_to(np.asarray(direction_variances, dtype=np.float64), self.eigenvalues.shape)
        damping = (1.0 - lr * self.eigenvalues)[:, None, None]  # [d, 1, 1]
        offsets = self.eigen_coordinates(start)[:, None, None]
        earlier = np.minimum.outer(times, times)[None]  # [1, m, m]: min(t, s)
        lag = np.abs(np.subtract.outer(times, times))[None]  # |t − s|
        means = damping ** times[None, :, None] * offsets  # [d, m, 1]: μ_t
        variance_earlier = lr * lr * variances[:, None, None] * _geometric_sum(damping**2, earlier)
        covariance = damping**lag * variance_earlier  # [d, m, m]: C(t, s)
        squared_covariance = 2.0 * covariance**2 + 4.0 * means * np.swapaxes(means, 1, 2) * covariance
        loss_covariance = np.sum(0.25 * self.eigenvalues[:, None, None] ** 2 * squared_covariance, axis=0)
        diagonal = np.arange(times.size)
        second_moments = means[:, :, 0] ** 2 + variance_earlier[:, diagonal, diagonal]  # E[e_t²]
        mean_losses = 0.5 * np.sum(self.eigenvalues[:, None] * second_moments, axis=0)
        average_variance = float(np.sum(loss_covariance)) / times.size**2
        return float(np.mean(mean_losses)), math.sqrt(max(average_variance, 0.0))

    def direction_variances(self, covariance: ArrayLike) -> NDArray[np.float64]:
        """v_i = q_iᵀ C q_i: the variance of noise with covariance C along each eigenvector."""
        matrix = np.asarray(covariance, dtype=np.float64)
        return np.einsum("ji,jk,ki->i", self.eigenvectors, matrix, self.eigenvectors)


class DeterministicSamples:
    """Measurement set and minibatches of a landscape whose loss does not depend on data."""

    def measurement_set(self) -> MeasurementSet:
        """One dummy sample whose 'loss' is L(θ): the measurement-set mean is exact."""
        return MeasurementSet(
            torch.zeros(1, 1, dtype=torch.float64),
            torch.zeros(1, dtype=torch.float64),
            loss_fn=outputs_are_losses,
            chunk_size=1,
        )

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A 'minibatch' of a deterministic landscape: every sample has the same loss."""
        del generator
        return torch.zeros(batch_size, 1, dtype=torch.float64), torch.zeros(batch_size, dtype=torch.float64)


class Quadratic(nn.Module, QuadraticAnswers, DeterministicSamples):
    """L(θ) = ½ (θ − θ*)ᵀ H (θ − θ*), H = Q diag(λ) Qᵀ, any real spectrum.

    Zero eigenvalues make flat directions, negative ones saddle directions; θ* is then a
    stationary point rather than the unique minimizer, and ``minimizer`` says so.

    ``forward(inputs)`` returns L(θ) once per row of ``inputs`` (a dummy [1, 1] tensor from
    ``measurement_set``), so the mean over the measurement set is L(θ) exactly.

    Args:
        eigenvalues: λ, shape [d].
        rotation: see ``Rotation`` (None: H is diagonal).
        minimizer: θ*, default zeros.
        start: the initial value of ``theta``, default ones (a generic non-stationary point).
    """

    hessian_tensor: torch.Tensor
    stationary_tensor: torch.Tensor

    def __init__(
        self,
        eigenvalues: ArrayLike,
        rotation: Rotation = None,
        minimizer: ArrayLike | None = None,
        start: ArrayLike | None = None,
    ) -> None:
        super().__init__()
        spectrum = np.array(eigenvalues, dtype=np.float64).reshape(-1)
        if spectrum.size == 0 or not np.all(np.isfinite(spectrum)):
            raise ValueError("eigenvalues must be a non-empty vector of finite numbers")
        dimension = spectrum.size
        self.eigenvalues = spectrum
        self.eigenvectors = orthogonal_matrix(dimension, rotation)
        hessian = (self.eigenvectors * spectrum) @ self.eigenvectors.T
        # Exactly symmetric, so that autograd's and numpy's Hessians agree to the last bit.
        self.hessian_matrix = 0.5 * (hessian + hessian.T)
        self._stationary_point = np.zeros(dimension) if minimizer is None else as_vector(minimizer, dimension)
        initial = np.ones(dimension) if start is None else as_vector(start, dimension)
        self.theta = nn.Parameter(torch.tensor(initial, dtype=torch.float64))
        self.register_buffer("hessian_tensor", torch.tensor(self.hessian_matrix, dtype=torch.float64))
        self.register_buffer("stationary_tensor", torch.tensor(self._stationary_point, dtype=torch.float64))

    @property
    def stationary_point(self) -> NDArray[np.float64]:
        return self._stationary_point.copy()

    @property
    def is_convex(self) -> bool:
        return bool(np.all(self.eigenvalues >= 0.0))

    @property
    def minimizer(self) -> NDArray[np.float64] | None:
        """θ* when H ⪰ 0 (one of the minimizers θ* + null(H) if H is singular), else None."""
        return self.stationary_point if self.is_convex else None

    @property
    def minimum_loss(self) -> float | None:
        return 0.0 if self.is_convex else None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        offset = self.theta - self.stationary_tensor
        value = 0.5 * torch.dot(offset, self.hessian_tensor @ offset)
        return value.expand(inputs.shape[0])

    def loss(self, theta: ArrayLike | torch.Tensor) -> float:
        offset = as_vector(theta, self.dimension) - self._stationary_point
        return float(0.5 * offset @ self.hessian_matrix @ offset)
