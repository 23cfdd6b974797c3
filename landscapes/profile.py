"""A segment whose per-sample losses are draws from a known population: the answers of
every error bar.

One float64 parameter θ. Sample i is a row x_i of K + 1 numbers and its loss is the
piecewise-linear interpolation of that row over the nodes α_k = k/K:
ℓ_i(θ) = Σ_k x_ik · max(0, 1 − K |θ − α_k|). Measured along the segment θ_t = 0 → θ_{t+1} = 1
on the grid α_k, the per-sample losses are the rows themselves (up to one rounding of the
nodes), so drawing the rows from N(μ, Σ) makes the segment's *population* losses exactly μ:
every height, floor depth, barrier excess and barrier verdict has a closed form, and a
measurement's error bars can be checked against them sample set after sample set.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from sgdwalk import MeasurementSet, outputs_are_losses

__all__ = ["SegmentProfile"]


class SegmentProfile(nn.Module):
    nodes: torch.Tensor  # a registered buffer (nn.Module's __getattr__ types it loosely)

    """Per-sample segment losses drawn from N(``means``, ``covariance``) over K + 1 nodes.

    Args:
        means: μ, the population loss at α = 0, 1/K, …, (K−1)/K, 1 (K + 1 values, K ≥ 2).
        covariance: Σ of the per-sample losses across the nodes, [K+1, K+1], positive semi-definite.
        num_samples: how many samples the measurement set holds.
        seed: of the draws.
    """

    def __init__(self, means: ArrayLike, covariance: ArrayLike, num_samples: int, seed: int = 0) -> None:
        super().__init__()
        self.means = np.asarray(means, dtype=np.float64).reshape(-1)
        self.covariance = np.asarray(covariance, dtype=np.float64)
        nodes = self.means.size
        if nodes < 3 or self.covariance.shape != (nodes, nodes):
            raise ValueError(f"means ({nodes}) and covariance {self.covariance.shape} must describe 3+ nodes")
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.num_intervals = nodes - 1
        rng = np.random.default_rng(seed)
        self.rows = rng.multivariate_normal(self.means, self.covariance, size=num_samples, method="eigh")
        self.theta = nn.Parameter(torch.zeros(1, dtype=torch.float64))
        self.register_buffer("nodes", torch.arange(nodes, dtype=torch.float64) / self.num_intervals)

    @property
    def alphas(self) -> NDArray[np.float64]:
        """The grid in [0, 1) a tracker measures this segment on (α = 1 comes last, separately)."""
        return np.arange(self.num_intervals, dtype=np.float64) / self.num_intervals

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        hats = torch.clamp(1.0 - self.num_intervals * (self.theta - self.nodes).abs(), min=0.0)
        return rows @ hats

    def measurement_set(self, chunk_size: int | None = None) -> MeasurementSet:
        count = self.rows.shape[0]
        return MeasurementSet(
            torch.tensor(self.rows, dtype=torch.float64),
            torch.zeros(count, dtype=torch.float64),
            loss_fn=outputs_are_losses,
            chunk_size=count if chunk_size is None else chunk_size,
        )

    # ------------------------------------------------------------- population answers
    @property
    def height_start(self) -> float:
        return float(self.means[0] - self.means.min())

    @property
    def height_end(self) -> float:
        return float(self.means[-1] - self.means.min())

    @property
    def floor_depth(self) -> float:
        return float(min(self.means[0], self.means[-1]) - self.means.min())

    @property
    def barrier_excess(self) -> float:
        """Highest interior loss minus the higher end: positive when a barrier lies between."""
        return float(self.means[1:-1].max() - max(self.means[0], self.means[-1]))

    @property
    def crosses_a_barrier(self) -> bool:
        return self.barrier_excess > 0.0
