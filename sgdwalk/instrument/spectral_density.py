"""The Hessian's spectral density by stochastic Lanczos quadrature (Ubaru, Chen and Saad 2017).

For a symmetric H with eigenpairs (λ_i, u_i) and a unit vector v, vᵀ f(H) v = Σ_i (u_iᵀv)² f(λ_i):
an integral of f against a discrete measure with weights (u_iᵀv)². m steps of Lanczos from v
give a tridiagonal T_m whose eigenpairs (θ_k, y_k) are the nodes and weights τ_k = y_k[0]² of
that measure's m-point Gauss quadrature, exact for polynomials f of degree ≤ 2m − 1 and, when
the Krylov space is invariant (m = d, or a breakdown), for every f. With v = z/√d, z Rademacher,
d · vᵀf(H)v = zᵀ f(H) z is Hutchinson's unbiased estimate of tr f(H) = Σ_i f(λ_i). So per probe

    tr f(H) ≈ d Σ_k τ_k f(θ_k),

and the mean over independent probes estimates tr f(H), with sd/√probes its standard error
over the probes (as for ``curvature.hutchinson_trace``). The error it does not cover is the
quadrature's: small for smooth f once m resolves the spectrum, larger for an f with a jump
(a count of eigenvalues above a threshold) where a node falls close to the jump.

The density itself, φ(t) = (1/d) Σ_i δ(t − λ_i), integrates to 1; smoothed by a Gaussian of
width σ it is the linear statistic (1/d) tr g_σ(t − H) at each t, so it has a standard error
too. Every statistic here is of the Hessian of the measurement-set loss at the point, and its
standard error is over the probes only, not over the measurement set's own sampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.curvature import Matvec, rademacher_probes
from sgdwalk.instrument.distributed import SINGLE_PROCESS, Shard
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.sharpness import hessian_vector_product_operator, lanczos_extension, numpy_matvec

# Probes by default: as for the trace, 30 give a standard error whose own relative
# uncertainty is about 1/√(2·29) ≈ 13 %.
DEFAULT_DENSITY_PROBES = 30

# Lanczos steps per probe by default (Ubaru et al. use 15-80): 30 nodes per probe integrate
# polynomials of degree 59 exactly, and cost 30 parameter vectors of memory per probe run.
DEFAULT_LANCZOS_STEPS = 30

SpectralFunction = Callable[[NDArray[np.float64]], NDArray[np.float64]]


@dataclass(frozen=True)
class SpectralStatistic:
    """An estimate of tr f(H) and its standard error over the probes."""

    value: float
    standard_error: float


@dataclass(frozen=True)
class SpectralDensity:
    """Gauss quadrature nodes and weights of every probe, and what they took.

    Attributes:
        nodes: [probes, steps] Ritz values θ_k of each probe's Lanczos (a probe whose Krylov
            space was invariant early has fewer; its rows are padded with weight 0).
        weights: [probes, steps] τ_k = (first component of the Ritz vector)², summing to 1
            per probe.
        dimension: d, the number of parameters: the scale from vᵀf(H)v to tr f(H).
        products: Hessian-vector products taken.
    """

    nodes: NDArray[np.float64]
    weights: NDArray[np.float64]
    dimension: int
    products: int

    def per_probe(self, function: SpectralFunction) -> NDArray[np.float64]:
        """Each probe's estimate d Σ_k τ_k f(θ_k) of tr f(H)."""
        return self.dimension * np.sum(self.weights * function(self.nodes), axis=1)

    def trace_of(self, function: SpectralFunction) -> SpectralStatistic:
        """tr f(H) = Σ_i f(λ_i) for a vectorised ``function``: the mean over the probes and
        sd/√probes (e.g. ``lambda x: x`` the trace, ``lambda x: x > 2 / lr`` the eigenvalues
        above 2/η)."""
        estimates = self.per_probe(function)
        error = float(np.std(estimates, ddof=1) / math.sqrt(estimates.size)) if estimates.size > 1 else math.nan
        return SpectralStatistic(float(np.mean(estimates)), error)

    def smoothed(self, grid: ArrayLike, width: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The density convolved with a Gaussian of standard deviation ``width`` at each point of
        ``grid`` (integrating to 1 over t), and its standard error over the probes per point."""
        if width <= 0.0:
            raise ValueError(f"the smoothing width must be positive, got {width}")
        points = np.asarray(grid, dtype=np.float64).reshape(-1)
        kernel = np.exp(-0.5 * ((points[:, None, None] - self.nodes[None]) / width) ** 2) / (
            width * math.sqrt(2 * math.pi)
        )
        per_probe = np.sum(self.weights[None] * kernel, axis=2)  # [grid, probes], each a (1/d) tr g(t − H)
        probes = per_probe.shape[1]
        error = per_probe.std(axis=1, ddof=1) / math.sqrt(probes) if probes > 1 else np.full(points.size, math.nan)
        return per_probe.mean(axis=1), error


def lanczos_quadrature(
    matvec: Matvec, start: NDArray[np.float64], steps: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The nodes and weights of the Gauss quadrature of vᵀf(H)v, v = start/|start|, from
    ``steps`` Lanczos steps with full reorthogonalisation (fewer when the Krylov space is
    invariant, and then exact)."""
    if steps < 1:
        raise ValueError(f"Lanczos needs at least one step, got {steps}")
    if not np.any(start):
        raise ValueError("the start vector is zero: Lanczos needs a direction to start from")
    limit = min(steps, start.size)
    basis = np.empty((limit, start.size))
    basis[0] = start / np.linalg.norm(start)
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    for step in range(limit):
        extended = lanczos_extension(matvec, basis[: step + 1], diagonal, off_diagonal)
        if extended.breakdown or step + 1 == limit:
            return extended.values, extended.vectors[0] ** 2
        off_diagonal.append(extended.norm)
        basis[step + 1] = extended.direction / extended.norm
    raise AssertionError("unreachable: the loop returns at its last step")


def stochastic_lanczos_quadrature(
    matvec: Matvec, dimension: int, probes: int, steps: int, generator: np.random.Generator
) -> SpectralDensity:
    """``probes`` Rademacher starts, ``steps`` Lanczos steps each: the quadratures, padded."""
    if probes < 1:
        raise ValueError(f"stochastic Lanczos quadrature needs at least one probe, got {probes}")
    quadratures = [lanczos_quadrature(matvec, z, steps) for z in rademacher_probes(probes, dimension, generator)]
    width = max(nodes.size for nodes, _ in quadratures)
    nodes = np.zeros((probes, width))
    weights = np.zeros((probes, width))
    for row, (probe_nodes, probe_weights) in enumerate(quadratures):
        nodes[row, : probe_nodes.size] = probe_nodes
        weights[row, : probe_weights.size] = probe_weights
    return SpectralDensity(nodes, weights, dimension, sum(nodes.size for nodes, _ in quadratures))


def spectral_density(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    *,
    probes: int = DEFAULT_DENSITY_PROBES,
    steps: int = DEFAULT_LANCZOS_STEPS,
    seed: int = 0,
    bn_mode: BatchNormMode = "train",
    reuse_graph: bool | None = None,
    shard: Shard = SINGLE_PROCESS,
) -> SpectralDensity:
    """The spectral density of the Hessian of the measurement-set loss at ``point``, by
    ``probes`` × ``steps`` Hessian-vector products; probes drawn from a numpy generator seeded
    with ``seed`` (torch's random state is not touched)."""
    product = hessian_vector_product_operator(model, point, measurement, bn_mode, reuse_graph, shard)
    return stochastic_lanczos_quadrature(
        numpy_matvec(point, product), point.numel(), probes, steps, np.random.default_rng(seed)
    )
