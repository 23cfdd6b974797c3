"""Paired moments of per-sample losses at several points, accumulated chunk by chunk.

The losses at all points of one segment are measured on the same samples, so they are
paired: the standard error of a difference L(α) − L(α') comes from the per-sample
differences, whose variance is far smaller than either loss's own when the points are
close. Keeping the means and the centred cross-product matrix of the P points is enough for
the standard error of every such difference (every linear contrast), in memory that grows
with P², not with the number of samples.

Chunks are merged with Chan, Golub and LeVeque's pairwise update (a chunk's own centred
moments, then one correction for the shift between means), in float64, so the variance
never suffers the cancellation of a raw sum of squares when the losses are large and their
spread is small. The sums that give the means are kept separately, summed in the same order
as a plain pass over the set, so the means equal what ``losses_at_points`` reports.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray


class PairedLossMoments:
    """Running count, sums and centred cross-products of per-sample losses at P points.

    ``update(losses)`` takes a [P, m] tensor: the per-sample losses of one chunk of m samples
    at each of the P points (row p is point p, column i is sample i of the chunk).
    """

    def __init__(self, num_points: int) -> None:
        if num_points < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.num_points = num_points
        self.count = 0
        self._sums = torch.zeros(num_points, dtype=torch.float64)
        self._mean = torch.zeros(num_points, dtype=torch.float64)
        self._comoment = torch.zeros(num_points, num_points, dtype=torch.float64)

    def update(self, losses: torch.Tensor) -> None:
        if losses.ndim != 2 or losses.shape[0] != self.num_points:
            raise ValueError(f"expected per-sample losses of shape [{self.num_points}, m], got {tuple(losses.shape)}")
        chunk = losses.detach().to(device="cpu", dtype=torch.float64)
        size = int(chunk.shape[1])
        if size == 0:
            return
        # Row by row, as a plain pass sums each point's losses (the means stay bitwise equal).
        for point in range(self.num_points):
            self._sums[point] += chunk[point].sum()
        chunk_mean = chunk.mean(dim=1)
        centred = chunk - chunk_mean[:, None]
        chunk_comoment = centred @ centred.T
        total = self.count + size
        shift = chunk_mean - self._mean
        self._comoment += chunk_comoment + torch.outer(shift, shift) * (self.count * size / total)
        self._mean += shift * (size / total)
        self.count = total

    def merge(self, other: PairedLossMoments) -> None:
        """Add the samples ``other`` saw (disjoint from these), by the same pairwise update."""
        if other.num_points != self.num_points:
            raise ValueError(f"cannot merge moments of {other.num_points} points into {self.num_points}")
        if other.count == 0:
            return
        total = self.count + other.count
        shift = other._mean - self._mean
        self._sums += other._sums
        self._comoment += other._comoment + torch.outer(shift, shift) * (self.count * other.count / total)
        self._mean += shift * (other.count / total)
        self.count = total

    def packed(self) -> torch.Tensor:
        """Everything in one float64 vector (count, sums, mean, co-moment), to send between processes."""
        count = torch.tensor([float(self.count)], dtype=torch.float64)
        return torch.cat([count, self._sums, self._mean, self._comoment.reshape(-1)])

    @classmethod
    def unpacked(cls, vector: torch.Tensor, num_points: int) -> PairedLossMoments:
        """The moments ``packed`` sent (exact: counts below 2**53 are exact in float64)."""
        moments = cls(num_points)
        values = vector.detach().to(device="cpu", dtype=torch.float64)
        moments.count = int(values[0])
        moments._sums = values[1 : 1 + num_points].clone()
        moments._mean = values[1 + num_points : 1 + 2 * num_points].clone()
        moments._comoment = values[1 + 2 * num_points :].reshape(num_points, num_points).clone()
        return moments

    @property
    def means(self) -> NDArray[np.float64]:
        """Mean loss at each point over the samples seen so far."""
        if self.count == 0:
            raise ValueError("no samples have been accumulated")
        return (self._sums / self.count).numpy()

    @property
    def covariance(self) -> NDArray[np.float64]:
        """Sample covariance (ddof = 1) of the per-sample losses across the P points."""
        if self.count < 2:
            return np.full((self.num_points, self.num_points), np.nan)
        return (self._comoment / (self.count - 1)).numpy()


def contrast_standard_error(covariance: ArrayLike, count: int, weights: ArrayLike) -> float:
    """Standard error of Σ_p w_p L_p, the mean of per-sample contrasts over ``count`` samples.

    sqrt(wᵀ Σ w / n); 0.0 for a zero contrast (a point compared with itself), NaN when the
    covariance is unknown (fewer than two samples).
    """
    w = np.asarray(weights, dtype=np.float64)
    if not np.any(w):
        return 0.0
    sigma = np.asarray(covariance, dtype=np.float64)
    variance = float(w @ sigma @ w)
    if not math.isfinite(variance):
        return math.nan
    # Rounding can make the variance of a near-constant contrast a hair negative.
    return math.sqrt(max(variance, 0.0) / count)


def difference_standard_error(covariance: ArrayLike, count: int, first: int, second: int) -> float:
    """Standard error of L_first − L_second (0.0 when they are the same point)."""
    sigma = np.asarray(covariance, dtype=np.float64)
    weights = np.zeros(sigma.shape[0])
    weights[first] += 1.0
    weights[second] -= 1.0
    return contrast_standard_error(sigma, count, weights)
