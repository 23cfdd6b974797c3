"""The Hessian's spectrum beyond its top eigenvalue: its trace and its top-k eigenvalues.

Both are built on the Hessian-vector products of ``sharpness.hessian_vector_product_operator``
(double backward at a point the model does not hold), so they see the same loss, chunking and
batch-norm mode as the sharpness.

The trace is estimated from random probes. Hutchinson: for Rademacher z (E[zzᵀ] = I),
E[zᵀHz] = tr H, so the mean of m probe estimates is unbiased and, the probes being
independent, its standard error is sd(estimates)/√m. Hutch++ (Meyer, Musco, Musco and
Woodruff 2021) spends a third of the products sketching the top subspace (Q, an orthonormal
basis of H·S), takes tr(QᵀHQ) exactly from another third, and runs Hutchinson on the deflated
rest (I − QQᵀ)H(I − QQᵀ) with the last third: a Hessian whose trace is carried by a few large
eigenvalues leaves a rest with little variance. Only the rest is random given Q, so its
Hutchinson standard error is the estimate's (conditional on the sketch, which is unbiased for
any Q). The standard errors are over the probes only: the measurement set's own sampling
error is not in them.

The top-k eigenvalues come from single-vector Lanczos with full reorthogonalisation, stopped
when every one of the k top Ritz values has a residual below the relative tolerance. A
single start vector sees one copy of a repeated eigenvalue: multiplicities are not found
(the block Lanczos that would find them is not built).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.distributed import SINGLE_PROCESS, Shard
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.sharpness import hessian_vector_product_operator, lanczos_extension, numpy_matvec
from sgdwalk.instrument.tolerances import SHARPNESS_RELATIVE_ERROR

TraceMethod = Literal["hutchinson", "hutch++"]
Matvec = Callable[[NDArray[np.float64]], NDArray[np.float64]]

# Probes of the trace estimate by default: 30 Hutchinson probes give a standard error whose
# own relative uncertainty is about 1/√(2·29) ≈ 13 %, enough to say how good the value is.
DEFAULT_TRACE_PROBES = 30

# Lanczos for the top-k stops after this many products unless told otherwise (as the
# sharpness's does): the kept basis grows by one parameter vector per product.
_DEFAULT_MAX_PRODUCTS = 300


# ------------------------------------------------------------------------------- trace
@dataclass(frozen=True)
class TraceEstimate:
    """The estimated trace, its standard error over the random probes, and the
    Hessian-vector products it took."""

    value: float
    standard_error: float
    products: int


def rademacher_probes(count: int, dimension: int, generator: np.random.Generator) -> NDArray[np.float64]:
    """``count`` rows of independent ±1 entries: E[zzᵀ] = I, and the least variance of zᵀAz
    among such probes (no diagonal term)."""
    return generator.integers(0, 2, size=(count, dimension)).astype(np.float64) * 2.0 - 1.0


def _mean_and_standard_error(estimates: NDArray[np.float64]) -> tuple[float, float]:
    return float(np.mean(estimates)), float(np.std(estimates, ddof=1) / np.sqrt(estimates.size))


def hutchinson_trace(matvec: Matvec, dimension: int, probes: int, generator: np.random.Generator) -> TraceEstimate:
    """Mean of zᵀHz over ``probes`` Rademacher z, with sd/√probes as its standard error."""
    if probes < 2:
        raise ValueError(f"Hutchinson's standard error needs at least 2 probes, got {probes}")
    estimates = np.array([z @ matvec(z) for z in rademacher_probes(probes, dimension, generator)])
    value, standard_error = _mean_and_standard_error(estimates)
    return TraceEstimate(value, standard_error, probes)


def hutch_plus_plus_trace(matvec: Matvec, dimension: int, probes: int, generator: np.random.Generator) -> TraceEstimate:
    """Hutch++ with ``probes`` products: ⌊probes/3⌋ sketch H·S, as many take tr(QᵀHQ), the
    rest (at least two) are Hutchinson probes of the deflated Hessian, whose standard error
    is the estimate's."""
    sketch_size = probes // 3
    rest = probes - 2 * sketch_size
    if sketch_size < 1 or rest < 2:
        raise ValueError(f"Hutch++ needs at least 4 probes (1 to sketch, 2 for the rest's error), got {probes}")
    sketch = rademacher_probes(sketch_size, dimension, generator)
    image = np.array([matvec(s) for s in sketch]).T
    basis, _ = np.linalg.qr(image)
    top_trace = float(sum(q @ matvec(q) for q in basis.T))
    deflated = rademacher_probes(rest, dimension, generator)
    deflated -= (deflated @ basis) @ basis.T  # (I − QQᵀ) g, so the rest sees no top subspace
    estimates = np.array([w @ matvec(w) for w in deflated])
    value, standard_error = _mean_and_standard_error(estimates)
    return TraceEstimate(top_trace + value, standard_error, sketch_size + basis.shape[1] + rest)


# The estimators work in float64 numpy; the products run in the point's dtype and device.
def hessian_trace(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    *,
    probes: int = DEFAULT_TRACE_PROBES,
    seed: int = 0,
    method: TraceMethod = "hutchinson",
    bn_mode: BatchNormMode = "train",
    reuse_graph: bool | None = None,
    shard: Shard = SINGLE_PROCESS,
) -> TraceEstimate:
    """The trace of the Hessian of the measurement-set loss at ``point``, by ``method`` with
    ``probes`` Hessian-vector products drawn from a numpy generator seeded with ``seed``
    (torch's random state is not touched; the same seed gives the same value)."""
    if method not in ("hutchinson", "hutch++"):
        raise ValueError(f"method must be 'hutchinson' or 'hutch++', got {method!r}")
    product = hessian_vector_product_operator(model, point, measurement, bn_mode, reuse_graph, shard)
    matvec = numpy_matvec(point, product)
    estimator = hutchinson_trace if method == "hutchinson" else hutch_plus_plus_trace
    return estimator(matvec, point.numel(), probes, np.random.default_rng(seed))


# ------------------------------------------------------------------------------ top-k
@dataclass(frozen=True)
class TopEigenvalues:
    """The k largest Ritz values (descending), each one's residual bound (an eigenvalue lies
    within it), and the Hessian-vector products taken."""

    values: NDArray[np.float64]
    error_bounds: NDArray[np.float64]
    products: int


def lanczos_top_eigenvalues(
    matvec: Matvec,
    start: NDArray[np.float64],
    k: int,
    *,
    relative_error: float = SHARPNESS_RELATIVE_ERROR,
    max_products: int | None = None,
) -> TopEigenvalues:
    """The k largest (algebraic) eigenvalues of the symmetric operator ``matvec`` by Lanczos.

    Full reorthogonalisation as in ``sharpness.lanczos_top_eigenpair`` (no ghost copies of
    converged eigenvalues). Stops when each of the k top Ritz values' residual r_i = β·|e_lastᵀy_i|
    is below ``relative_error`` times its magnitude (an eigenvalue then lies within r_i), after
    ``max_products`` products, or when the Krylov space is invariant (the values are exact).
    """
    dimension = start.size
    if not 1 <= k <= dimension:
        raise ValueError(f"k must be between 1 and the number of parameters ({dimension}), got {k}")
    limit = min(dimension, _DEFAULT_MAX_PRODUCTS if max_products is None else max_products)
    if limit < k:
        raise ValueError(f"max_products must be at least k={k}, got {max_products}")
    if not np.any(start):
        raise ValueError("the start vector is zero: Lanczos needs a direction to start from")
    basis = np.empty((limit, dimension))
    basis[0] = start / np.linalg.norm(start)
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    for step in range(limit):
        extended = lanczos_extension(matvec, basis[: step + 1], diagonal, off_diagonal)
        values, vectors, norm, breakdown = extended.values, extended.vectors, extended.norm, extended.breakdown
        top = np.arange(values.size)[::-1][:k]
        bounds = np.zeros(top.size) if breakdown else norm * np.abs(vectors[-1, top])
        converged = top.size == k and bool(np.all(bounds <= relative_error * np.abs(values[top])))
        if breakdown or step + 1 == limit or converged:
            if top.size < k:
                raise ValueError(
                    f"the Krylov space of the start vector holds only {top.size} eigenvalues, fewer than k={k} "
                    "(a repeated eigenvalue, or a Hessian of low rank)"
                )
            return TopEigenvalues(values[top], bounds, step + 1)
        off_diagonal.append(norm)
        basis[step + 1] = extended.direction / norm
    raise AssertionError("unreachable: the loop returns at its last step")


def top_hessian_eigenvalues(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    k: int,
    *,
    bn_mode: BatchNormMode = "train",
    seed: int = 0,
    relative_tolerance: float = SHARPNESS_RELATIVE_ERROR,
    max_iterations: int | None = None,
    reuse_graph: bool | None = None,
    shard: Shard = SINGLE_PROCESS,
) -> TopEigenvalues:
    """The k largest (algebraic) Hessian eigenvalues at ``point``, descending, each good to
    ``relative_tolerance`` of itself; Lanczos starts from a unit vector drawn with ``seed``."""
    product = hessian_vector_product_operator(model, point, measurement, bn_mode, reuse_graph, shard)
    start = np.random.default_rng(seed).standard_normal(point.numel())
    return lanczos_top_eigenvalues(
        numpy_matvec(point, product), start, k, relative_error=relative_tolerance, max_products=max_iterations
    )
