"""A finite-sum quadratic whose minibatch gradient noise follows the Hessian.

Per-sample losses ℓ_i(θ) = ½ (θ − c_i)ᵀ H (θ − c_i), i = 1 … n, with shifts c_i drawn with
covariance σ² H⁺ (zero along flat directions). Then ∇ℓ_i − ∇L = −H (c_i − c̄), whose
covariance is H Cov(c) H ≈ σ² H: the noise of SGD is Hessian-shaped and vanishes exactly
along flat directions. The mean loss is L(θ) = ½ (θ − c̄)ᵀ H (θ − c̄) + L*, with c̄ the mean
shift and L* = ½ Σ_j λ_j s_j², s_j² the finite-population variance of the shifts along
eigenvector j. Every answer here is for this finite set, exactly (no sampling error).

Stationary excess loss of SGD with B samples drawn with replacement (derivation):
e = Qᵀ(θ − c̄) follows e_j ← (1 − ηλ_j) e_j + ηλ_j ξ_j, where ξ_j, the mean of B
independent draws of Qᵀ(c_i − c̄), has mean 0 and variance s_j²/B and is independent of e.
So E[e_j²] ← (1 − ηλ_j)² E[e_j²] + η²λ_j² s_j²/B, whose fixed point for 0 < ηλ_j < 2 is
η λ_j s_j² / (B (2 − ηλ_j)). The excess loss ½ Σ λ_j E[e_j²] is therefore

    E[L] − L* = Σ_j η λ_j² s_j² / (2 B (2 − ηλ_j)).

Only E[e_j²] enters, so the cross-covariances of the finite sample never matter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from landscapes.quadratic import QuadraticAnswers, Rotation, as_vector, orthogonal_matrix
from sgdwalk import MeasurementSet, outputs_are_losses

__all__ = ["NoisyQuadratic"]


class NoisyQuadratic(nn.Module, QuadraticAnswers):
    """ℓ_i(θ) = ½ (θ − c_i)ᵀ H (θ − c_i) over a fixed set of n shifts c_i ~ N(center, σ² H⁺).

    ``forward(shifts)`` takes a batch of shifts (rows of ``shifts``, shape [b, d]) as its
    inputs and returns the b per-sample losses; ``measurement_set`` holds all n of them and
    ``sample_batch`` draws B with replacement.

    Args:
        eigenvalues: λ ≥ 0 (a negative eigenvalue has no σ² H⁺ covariance), shape [d].
        num_samples: n.
        noise_scale: σ.
        seed: the seed of the shifts (and of the rotation when ``rotation`` is "seed").
        rotation: see ``landscapes.quadratic.Rotation``.
        center: the mean of the shift distribution, default zeros.
        start: the initial value of ``theta``, default ones.
        exact_covariance: whiten the draws (needs num_samples > d) so the finite set has mean
            ``center`` and covariance exactly σ² H⁺: then s_j² = σ²/λ_j and the shifts are
            uncorrelated across eigendirections, as the Gaussian population is.
    """

    hessian_tensor: torch.Tensor
    shift_tensor: torch.Tensor

    def __init__(
        self,
        eigenvalues: ArrayLike,
        num_samples: int,
        noise_scale: float,
        seed: int = 0,
        rotation: Rotation = None,
        center: ArrayLike | None = None,
        start: ArrayLike | None = None,
        exact_covariance: bool = False,
    ) -> None:
        super().__init__()
        spectrum = np.array(eigenvalues, dtype=np.float64).reshape(-1)
        if spectrum.size == 0 or not np.all(np.isfinite(spectrum)):
            raise ValueError("eigenvalues must be a non-empty vector of finite numbers")
        if np.any(spectrum < 0.0):
            raise ValueError("a NoisyQuadratic needs eigenvalues >= 0: σ² H⁺ is a covariance only when H ⪰ 0")
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2 (noise needs two samples), got {num_samples}")
        if noise_scale < 0.0:
            raise ValueError(f"noise_scale is a standard deviation and must be >= 0, got {noise_scale}")
        dimension = spectrum.size
        self.eigenvalues = spectrum
        self.eigenvectors = orthogonal_matrix(dimension, rotation)
        hessian = (self.eigenvectors * spectrum) @ self.eigenvectors.T
        self.hessian_matrix = 0.5 * (hessian + hessian.T)
        self.noise_scale = float(noise_scale)

        # Standard deviation σ/√λ along curved eigenvectors, exactly 0 along flat ones (H⁺).
        safe = np.where(spectrum > 0.0, spectrum, 1.0)
        scales = np.where(spectrum > 0.0, self.noise_scale / np.sqrt(safe), 0.0)
        standard_normal = np.random.default_rng(seed).standard_normal((num_samples, dimension))
        if exact_covariance:
            if num_samples <= dimension:
                raise ValueError(f"exact_covariance needs num_samples > dimension, got {num_samples} <= {dimension}")
            centered = standard_normal - standard_normal.mean(axis=0)
            # Orthonormal columns scaled by √n: mean exactly 0, second moment exactly I.
            left, _, _ = np.linalg.svd(centered, full_matrices=False)
            standard_normal = left * math.sqrt(num_samples)
        mean = np.zeros(dimension) if center is None else as_vector(center, dimension)
        self.shifts = mean + (standard_normal * scales) @ self.eigenvectors.T
        self.mean_shift = self.shifts.mean(axis=0)
        # Coordinates of c_i − c̄ in the eigenbasis, and their finite-population variances.
        deviations = (self.shifts - self.mean_shift) @ self.eigenvectors
        self.shift_variances = np.mean(deviations**2, axis=0)
        self.minimum_loss = float(0.5 * np.sum(spectrum * self.shift_variances))

        initial = np.ones(dimension) if start is None else as_vector(start, dimension)
        self.theta = nn.Parameter(torch.tensor(initial, dtype=torch.float64))
        self.register_buffer("hessian_tensor", torch.tensor(self.hessian_matrix, dtype=torch.float64))
        self.register_buffer("shift_tensor", torch.tensor(self.shifts, dtype=torch.float64))

    @property
    def num_samples(self) -> int:
        return int(self.shifts.shape[0])

    @property
    def stationary_point(self) -> NDArray[np.float64]:
        return self.mean_shift.copy()

    @property
    def minimizer(self) -> NDArray[np.float64]:
        """c̄ (one of the minimizers c̄ + null(H) when H is singular)."""
        return self.mean_shift.copy()

    def forward(self, shifts: torch.Tensor) -> torch.Tensor:
        offsets = self.theta - shifts
        return 0.5 * ((offsets @ self.hessian_tensor) * offsets).sum(dim=1)

    def loss(self, theta: ArrayLike | torch.Tensor) -> float:
        """L(θ) = ½ (θ − c̄)ᵀ H (θ − c̄) + L*, the mean of the n per-sample losses."""
        offset = as_vector(theta, self.dimension) - self.mean_shift
        return float(0.5 * offset @ self.hessian_matrix @ offset) + self.minimum_loss

    def sample_losses(self, theta: ArrayLike | torch.Tensor) -> NDArray[np.float64]:
        """ℓ_i(θ) for every sample, by the definition (no decomposition)."""
        offsets = as_vector(theta, self.dimension) - self.shifts
        return 0.5 * np.einsum("ij,jk,ik->i", offsets, self.hessian_matrix, offsets)

    def gradient_noise_covariance(self) -> NDArray[np.float64]:
        """Cov of one sample's gradient, H Cov(c) H (finite population); ≈ σ² H."""
        centered = self.shifts - self.mean_shift
        covariance = centered.T @ centered / self.num_samples
        return self.hessian_matrix @ covariance @ self.hessian_matrix

    def measurement_set(self, chunk_size: int | None = None) -> MeasurementSet:
        return MeasurementSet(
            self.shift_tensor.clone(),
            torch.zeros(self.num_samples, dtype=torch.float64),
            loss_fn=outputs_are_losses,
            chunk_size=self.num_samples if chunk_size is None else chunk_size,
        )

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """B shifts drawn uniformly WITH replacement (the assumption of the stationary formula)."""
        indices = torch.randint(self.num_samples, (batch_size,), generator=generator)
        return self.shift_tensor[indices], torch.zeros(batch_size, dtype=torch.float64)

    def minibatch_noise_variances(self, batch_size: int) -> NDArray[np.float64]:
        """Variance of the minibatch gradient noise along each eigenvector: λ_j² s_j² / B."""
        return self.eigenvalues**2 * self.shift_variances / batch_size

    def expected_excess_loss_sgd(
        self, start: ArrayLike | torch.Tensor, lr: float, batch_size: int, steps: int
    ) -> float:
        """E[L(θ_t)] − L* after ``steps`` SGD steps from ``start`` (exact, see the module doc).

        SGD here is GD plus noise of variance λ_j² s_j²/B along eigenvector j, independent of
        the iterate, so the noisy-GD recursion applies as it is.
        """
        return self.expected_excess_loss_noisy_gd(start, lr, steps, self.minibatch_noise_variances(batch_size))

    def averaged_excess_loss_sgd(
        self, start: ArrayLike | torch.Tensor, lr: float, batch_size: int, steps: Sequence[int]
    ) -> tuple[float, float]:
        """Mean and standard deviation of (1/|S|) Σ_{t∈S} (L(θ_t) − L*) under SGD from ``start``.

        The mean is exact (it needs only E[e_j²], see ``expected_excess_loss_sgd``). The
        standard deviation treats the minibatch noise as Gaussian and independent across
        eigendirections (``averaged_excess_loss_noisy_gd``): SGD's noise has exactly those
        second moments, but its fourth moments and cross-direction correlations are those of
        the finite sample, so this spread is an approximation (checked against simulated SGD
        in tests/test_landscapes.py).
        """
        return self.averaged_excess_loss_noisy_gd(start, lr, steps, self.minibatch_noise_variances(batch_size))

    def stationary_excess_loss_sgd(self, lr: float, batch_size: int) -> float:
        """Σ_j η λ_j² s_j² / (2 B (2 − ηλ_j)); ``inf`` when some noisy ηλ_j ≥ 2."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return self.stationary_excess_loss_noisy_gd(lr, self.minibatch_noise_variances(batch_size))

    def stationary_loss_sgd(self, lr: float, batch_size: int) -> float:
        excess = self.stationary_excess_loss_sgd(lr, batch_size)
        return math.inf if math.isinf(excess) else self.minimum_loss + excess
