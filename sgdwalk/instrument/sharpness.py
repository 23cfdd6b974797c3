"""Sharpness: the top eigenvalue of the Hessian of the measurement-set loss, with its error.

Hessian-vector products by double backward through ``functional_call`` at a given
parameter vector (the model is not modified), fed to a Lanczos iteration with full
reorthogonalisation and a seeded start vector. It checks after every product whether the
value is good to ``SHARPNESS_RELATIVE_ERROR``: by default when the residual r of the Ritz
pair is that small (an eigenvalue lies within r), or, opted in with ``gap_estimate``, when
the Kato-Temple estimate r²/gap is (fewer products, but wrong for a top eigenvalue not yet
told apart from a close second). ARPACK, which this replaced, checked only after blocks of
20 products.

``which="LA"`` (default) is the largest algebraic eigenvalue, ``which="LM"`` the one of
largest magnitude: they differ when the Hessian has a large negative eigenvalue, and the
suite says which one it means.

``top_eigenvalue_standard_error`` says how precise the value is as an estimate over the
sample the measurement set is: batch means of the Rayleigh quotient along the found
eigenvector (see its docstring for why that is the first-order error of the eigenvalue).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeGuard

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.linalg import eigh_tridiagonal
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode, batchnorm_layers, check_batchnorm_mode, measuring
from sgdwalk.instrument.distributed import SINGLE_PROCESS, Shard
from sgdwalk.instrument.measurement import (
    Batch,
    MeasurementSet,
    ParameterLayout,
    batch_size,
    model_call,
    recomputed_batchnorm_statistics,
)
from sgdwalk.instrument.second_order import twice_differentiable_attention, unused_parameters_warning
from sgdwalk.instrument.tolerances import SHARPNESS_ERROR_BATCHES, SHARPNESS_RELATIVE_ERROR

EigenvalueChoice = Literal["LA", "LM"]

# Below this many parameters the Hessian is built column by column from Hessian-vector
# products and diagonalised densely, which is exact and no dearer than Lanczos.
_DENSE_FALLBACK_DIMENSION = 3

# Lanczos stops after this many products unless told otherwise: the basis it keeps grows by
# one parameter vector (float64) per product, and the sharpness of the networks measured
# here converges in 10-40.
_DEFAULT_MAX_PRODUCTS = 300

# A Lanczos step whose new direction is this small relative to the projected matrix has
# found an invariant subspace: its Ritz values are eigenvalues, exactly (up to rounding).
_BREAKDOWN_RELATIVE = 1e-12

# Kahan and Parlett's "twice is enough": a second Gram-Schmidt pass is needed only when the
# first removed most of the vector (its norm fell below 1/√2 of what it was).
_REORTHOGONALISE_AGAIN = 2**-0.5


def hessian_vector_product_operator(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    bn_mode: BatchNormMode = "train",
    reuse_graph: bool | None = None,
    shard: Shard = SINGLE_PROCESS,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ H v at ``point`` for the mean loss over the measurement set.

    With ``reuse_graph`` (default: when the set is a single chunk) the gradient and its
    graph are built once and every product is one backward through it; otherwise each
    product re-runs the chunks, so memory stays bounded by the chunk size. With a ``shard``
    of several processes each runs the chunks it owns and the products are summed over them.
    """
    return _operator_and_gradient(model, point, measurement, bn_mode, reuse_graph, shard)[0]


def _differing_from_the_model(model: nn.Module, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``values`` (parameters and buffers by name) the model does not hold now."""
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return {
        name: value.detach()
        for name, value in values.items()
        # Meta tensors (the cost model's count of a product's operations) have no values to hold.
        if not (value.is_meta or own[name].is_meta or torch.equal(own[name], value.detach()))
    }


@contextmanager
def _model_holding(model: nn.Module, values: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """The model's own parameters and buffers named in ``values`` hold those values, and their
    own again afterwards, bit for bit.

    A non-reentrant activation checkpoint recomputes its block inside the backward from the
    module's own tensors, read after ``functional_call`` has given them back: the backward
    passes of a forward taken elsewhere (another point, ``recompute`` mode's statistics) must
    find that point's values there (before, recompute mode's sharpness of a checkpointed
    network was half the right value, found by a second pair of eyes). Empty ``values`` (the
    tracker's θ_{t+1} in train and eval modes, the model's own): nothing is copied."""
    if not values:
        yield
        return
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    saved = {name: own[name].detach().clone() for name in values}
    try:
        with torch.no_grad():
            for name, value in values.items():
                own[name].copy_(value)
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                own[name].copy_(value)


def _gradient_saying_unused(
    loss: torch.Tensor, layout: ParameterLayout, views: dict[str, torch.Tensor]
) -> torch.Tensor:
    """d loss / d θ as one vector with its graph (for a second derivative), read per parameter:
    those the forward gave no gradient are zeros, and said once (``unused_parameters_warning``):
    a reentrant checkpoint's block cut out of the graph looks like that."""
    gradients = torch.autograd.grad(loss, list(views.values()), create_graph=True, allow_unused=True)
    unused = [name for name, gradient in zip(layout.names, gradients, strict=True) if gradient is None]
    if unused and loss.requires_grad:
        warnings.warn(unused_parameters_warning(unused), UserWarning, stacklevel=2)
    return torch.cat(
        [
            (torch.zeros_like(view) if gradient is None else gradient).reshape(-1)
            for view, gradient in zip(views.values(), gradients, strict=True)
        ]
    )


def _operator_and_gradient(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    bn_mode: BatchNormMode = "train",
    reuse_graph: bool | None = None,
    shard: Shard = SINGLE_PROCESS,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor | None]:
    """The operator, and the gradient at ``point`` where building it computed it (the
    reused graph); None where it would cost a pass of its own.

    Whether the graph is reused is decided on the whole set, not on this process's share:
    the gradient is part of Lanczos's start vector, which must not depend on the number of
    processes (the records would), and must be the same on every process."""
    check_batchnorm_mode(bn_mode)
    layout = ParameterLayout.of(model)
    leaf = point.detach().clone().requires_grad_(True)
    # "recompute": statistics re-estimated at the point, as losses_at_points does for the loss
    # there, then held as constants (eval mode): the Hessian of the eval-mode network at those
    # statistics, not of the loss with statistics re-estimated at every θ (definitions.md,
    # batch-norm modes). Without this the model's own running statistics would be used.
    buffers = recomputed_batchnorm_statistics(model, point, measurement) if bn_mode == "recompute" else {}
    forward_mode: BatchNormMode = "eval" if bn_mode == "recompute" else bn_mode
    # What the model must hold while a graph of this point is differentiated (_model_holding):
    # nothing at the tracker's θ_{t+1} in train and eval modes.
    held = _differing_from_the_model(model, {**layout.unflatten(point), **buffers})
    single_chunk = measurement.size <= measurement.chunk_size
    # A graph kept from one product to the next would see the model's tensors change between
    # them (held, then given back): where the model must hold something, each product is made
    # whole, inside one holding.
    reuse = (single_chunk if reuse_graph is None else reuse_graph) and not held

    def chunk_gradient(batch: Batch) -> torch.Tensor:
        # The forward whose graph is differentiated again needs second derivatives.
        with twice_differentiable_attention():
            views = layout.unflatten(leaf)
            call = model_call(model, {**views, **buffers})
            loss = measurement.losses(call, batch).sum() / measurement.size
            return _gradient_saying_unused(loss, layout, views)

    def own_chunks() -> list[Batch]:
        return [batch for number, batch in enumerate(measurement.chunks()) if shard.owns(number)]

    if reuse:
        with measuring(model, forward_mode):
            mine = own_chunks()
            # A process with no chunk of its own contributes zeros (a graph-free gradient).
            full_gradient = (
                torch.stack([chunk_gradient(batch) for batch in mine]).sum(dim=0) if mine else torch.zeros_like(leaf)
            )

        def product(vector: torch.Tensor) -> torch.Tensor:
            if not full_gradient.requires_grad:
                return shard.summed(torch.zeros_like(leaf))
            # In the forward's context: a non-reentrant checkpoint recomputes its block in this
            # backward, with the model's dropout and batch norm as they are now (a crash in train
            # mode before: "Recomputed values ... have different metadata").
            with measuring(model, forward_mode), twice_differentiable_attention():
                (hv,) = torch.autograd.grad(full_gradient, leaf, grad_outputs=vector, retain_graph=True)
            return shard.summed(hv.detach())

        return product, shard.summed(full_gradient.detach())

    def product_by_chunks(vector: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(leaf)
        with measuring(model, forward_mode), _model_holding(model, held):
            for batch in own_chunks():
                gradient = chunk_gradient(batch)
                with twice_differentiable_attention():
                    (hv,) = torch.autograd.grad(gradient, leaf, grad_outputs=vector)
                total += hv.detach()
        return shard.summed(total)

    return product_by_chunks, None


@dataclass(frozen=True)
class LanczosResult:
    """The chosen Ritz pair, how many products it took, and its estimated error."""

    value: float
    vector: NDArray[np.float64]
    products: int
    error_estimate: float


def _chosen(values: NDArray[np.float64], which: EigenvalueChoice) -> int:
    return int(np.argmax(values) if which == "LA" else np.argmax(np.abs(values)))


def _value_error_bound(values: NDArray[np.float64], chosen: int, residual: float, gap_estimate: bool) -> float:
    """The residual r of the Ritz pair: an eigenvalue lies within r of the Ritz value (a
    Weyl-type bound that needs nothing else). With ``gap_estimate``, min(r, r²/gap) with
    gap the distance to the next Ritz value (Kato-Temple): far smaller, but only an estimate,
    wrong when an eigenvalue close to the top one is not resolved yet (the Ritz gap then
    overstates the true one)."""
    others = np.delete(values, chosen)
    if not gap_estimate or others.size == 0:
        return residual
    gap = float(np.min(np.abs(others - values[chosen])))
    return residual if gap == 0.0 else min(residual, residual * residual / gap)


@dataclass(frozen=True)
class LanczosExtension:
    """One Lanczos step: the Ritz values and vectors (of the tridiagonal matrix so far), the
    next direction (orthogonal to the basis, not normalised), its norm, and whether the
    Krylov space is invariant (then the Ritz values are eigenvalues, up to rounding)."""

    values: NDArray[np.float64]
    vectors: NDArray[np.float64]
    direction: NDArray[np.float64]
    norm: float
    breakdown: bool


def lanczos_extension(
    matvec: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    kept: NDArray[np.float64],
    diagonal: list[float],
    off_diagonal: list[float],
) -> LanczosExtension:
    """Multiply the basis' last vector by the operator, append the diagonal entry to
    ``diagonal``, and make the product orthogonal to the whole basis ``kept`` (full
    reorthogonalisation, a second pass when the first cancelled much). The caller appends
    the norm to ``off_diagonal`` before the next step."""
    direction = np.asarray(matvec(kept[-1]), dtype=np.float64)
    diagonal.append(float(kept[-1] @ direction))
    before = float(np.linalg.norm(direction))
    direction -= kept.T @ (kept @ direction)
    norm = float(np.linalg.norm(direction))
    if norm < _REORTHOGONALISE_AGAIN * before:
        # Much was cancelled, so rounding left a visible component along the basis.
        direction -= kept.T @ (kept @ direction)
        norm = float(np.linalg.norm(direction))
    values, vectors = eigh_tridiagonal(np.array(diagonal), np.array(off_diagonal))
    scale = float(np.max(np.abs(values)))
    breakdown = norm <= _BREAKDOWN_RELATIVE * scale or scale == 0.0
    return LanczosExtension(values, vectors, direction, norm, breakdown)


def lanczos_top_eigenpair(
    matvec: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    start: NDArray[np.float64],
    *,
    which: EigenvalueChoice = "LA",
    relative_error: float = SHARPNESS_RELATIVE_ERROR,
    max_products: int | None = None,
    gap_estimate: bool = False,
) -> LanczosResult:
    """The top (``which``) eigenpair of the symmetric operator ``matvec`` by Lanczos.

    Full reorthogonalisation (a second pass when the first cancelled much) keeps the basis
    orthogonal in floating point, so no ghost copies of converged eigenvalues appear. Stops
    when the error bound of the value (``_value_error_bound``; for ``LM`` of both ends of the
    spectrum) is below ``relative_error`` times the value and the value moved by less than
    that since the previous product, after ``max_products`` products, or when the Krylov
    space is invariant (then the value is exact).
    """
    dimension = start.size
    limit = min(dimension, _DEFAULT_MAX_PRODUCTS if max_products is None else max_products)
    if limit < 1:
        raise ValueError(f"max_products must be positive, got {max_products}")
    if not np.any(start):
        raise ValueError("the start vector is zero: Lanczos needs a direction to start from")
    # Rows are written before they are read: np.empty spares zeroing (page faults) of
    # memory that most runs never touch.
    basis = np.empty((min(limit, 16), dimension))
    basis[0] = start / np.linalg.norm(start)
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    previous_value: float | None = None
    for step in range(limit):
        kept = basis[: step + 1]
        extended = lanczos_extension(matvec, kept, diagonal, off_diagonal)
        values, vectors, norm, breakdown = extended.values, extended.vectors, extended.norm, extended.breakdown
        chosen = _chosen(values, which)
        value = float(values[chosen])
        # "LM" compares the two ends of the spectrum, so both must have converged: an end
        # still moving outwards could overtake the one that has settled.
        ends = {chosen} if which == "LA" else {int(np.argmin(values)), int(np.argmax(values))}
        error = (
            0.0
            if breakdown
            else max(_value_error_bound(values, end, norm * abs(float(vectors[-1, end])), gap_estimate) for end in ends)
        )
        settled = previous_value is not None and abs(value - previous_value) <= relative_error * abs(value)
        if breakdown or step + 1 == limit or (settled and error <= relative_error * abs(value)):
            return LanczosResult(value, kept.T @ vectors[:, chosen], step + 1, error)
        previous_value = value
        off_diagonal.append(norm)
        if step + 1 == basis.shape[0]:
            basis = np.concatenate([basis, np.empty((min(basis.shape[0], limit - basis.shape[0]), dimension))])
        basis[step + 1] = extended.direction / norm
    raise AssertionError("unreachable: the loop returns at its last step")


def numpy_matvec(
    point: torch.Tensor, product: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """``product`` (on tensors like ``point``) as a float64 numpy operator, for Lanczos."""

    def matvec(vector: NDArray[np.float64]) -> NDArray[np.float64]:
        as_tensor = torch.as_tensor(np.ravel(vector), dtype=point.dtype, device=point.device)
        return product(as_tensor).double().cpu().numpy()

    return matvec


def _dense_top_eigenpair(
    matvec: Callable[[NDArray[np.float64]], NDArray[np.float64]], dimension: int, which: EigenvalueChoice
) -> LanczosResult:
    columns = [matvec(column) for column in np.eye(dimension)]
    hessian = np.array(columns).T
    values, vectors = np.linalg.eigh(0.5 * (hessian + hessian.T))
    chosen = _chosen(values, which)
    return LanczosResult(float(values[chosen]), vectors[:, chosen], dimension, 0.0)


def _start_vector(dimension: int, seed: int, gradient: NDArray[np.float64] | None) -> NDArray[np.float64]:
    """A seeded random unit vector, plus the unit gradient where it is at hand.

    The gradient of a network's loss lies mostly in the top few Hessian eigendirections
    (Gur-Ari, Roberts and Dyer 2018), so it starts Lanczos close to the answer (measured:
    2-3 fewer products on the MLP of ``benchmarks/test_sharpness_speed.py``); the random half
    keeps every eigendirection in the Krylov space, so a gradient that happens to be another
    eigenvector cannot hide the top one.
    """
    start = np.random.default_rng(seed).standard_normal(dimension)
    start /= np.linalg.norm(start)
    if gradient is not None and np.linalg.norm(gradient) > 0.0 and np.all(np.isfinite(gradient)):
        start += gradient / np.linalg.norm(gradient)
    return start


def _usable_warm_start(vector: NDArray[np.float64] | None, dimension: int) -> TypeGuard[NDArray[np.float64]]:
    """A vector Lanczos can start from: this model's size, finite and not zero."""
    return (
        vector is not None
        and vector.shape == (dimension,)
        and bool(np.all(np.isfinite(vector)))
        and bool(np.linalg.norm(vector) > 0.0)
    )


def top_hessian_eigenpair(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    *,
    bn_mode: BatchNormMode = "train",
    which: EigenvalueChoice = "LA",
    seed: int = 0,
    relative_tolerance: float = SHARPNESS_RELATIVE_ERROR,
    max_iterations: int | None = None,
    reuse_graph: bool | None = None,
    gap_estimate: bool = False,
    shard: Shard = SINGLE_PROCESS,
    warm_start: NDArray[np.float64] | None = None,
) -> LanczosResult:
    """The largest (``LA``) or largest-magnitude (``LM``) Hessian eigenvalue at ``point``,
    with its unit eigenvector (float64, flat like ``point``) and the products it took.

    Lanczos starts from a vector drawn with ``seed`` (plus the gradient where the graph is
    reused, see ``_start_vector``): the same seed gives the same value. ``warm_start``, an
    eigenvector found at a nearby point (the previous measured step's), is added to that
    vector at the same length: the Krylov space then holds every eigendirection the cold
    start's does (the warm vector alone would not, where the Hessian is block diagonal and
    the top eigenvalue moved to another block), so the answer is the same to within
    ``relative_tolerance``, in fewer products the closer the point (``_usable_warm_start``
    leaves the cold start alone for a vector that cannot start Lanczos).

    ``relative_tolerance`` bounds the relative error of the value, and ``gap_estimate``
    trades that bound for an estimate (see ``lanczos_top_eigenpair``); ``max_iterations``
    caps the Hessian-vector products. With a ``shard`` of several processes every process
    must call this together; each evaluates its chunks, the products are summed, and every
    process runs the same Lanczos on the same vectors (same seed) to the same result.
    """
    if which not in ("LA", "LM"):
        raise ValueError(f"which must be 'LA' (largest algebraic) or 'LM' (largest magnitude), got {which!r}")
    product, gradient = _operator_and_gradient(model, point, measurement, bn_mode, reuse_graph, shard)
    matvec = numpy_matvec(point, product)
    dimension = point.numel()
    if dimension < _DENSE_FALLBACK_DIMENSION:
        return _dense_top_eigenpair(matvec, dimension, which)
    start = _start_vector(dimension, seed, None if gradient is None else gradient.double().cpu().numpy())
    if _usable_warm_start(warm_start, dimension):
        # The previous eigenvector added to the cold start, not in its place: a Hessian that
        # is block diagonal (parts of the model that do not interact) keeps a Krylov space
        # started in one block inside it, so a top eigenvalue that moved to another block
        # would never be seen (found by a second pair of eyes: 8 % low, without a word).
        start = start + warm_start / np.linalg.norm(warm_start)
    return lanczos_top_eigenpair(
        matvec,
        start,
        which=which,
        relative_error=relative_tolerance,
        max_products=max_iterations,
        gap_estimate=gap_estimate,
    )


def top_hessian_eigenvalue(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    *,
    bn_mode: BatchNormMode = "train",
    which: EigenvalueChoice = "LA",
    seed: int = 0,
    relative_tolerance: float = SHARPNESS_RELATIVE_ERROR,
    max_iterations: int | None = None,
    reuse_graph: bool | None = None,
    shard: Shard = SINGLE_PROCESS,
) -> float:
    """The largest (``LA``) or largest-magnitude (``LM``) Hessian eigenvalue at ``point``."""
    return top_hessian_eigenpair(
        model,
        point,
        measurement,
        bn_mode=bn_mode,
        which=which,
        seed=seed,
        relative_tolerance=relative_tolerance,
        max_iterations=max_iterations,
        reuse_graph=reuse_graph,
        shard=shard,
    ).value


# ------------------------------------------------------------------ error over the set
def _error_batches(
    model: nn.Module, measurement: MeasurementSet, bn_mode: BatchNormMode, num_batches: int
) -> Iterator[Batch]:
    """Disjoint parts of the measurement set whose mean losses average to the set's loss.

    In ``train`` batch-norm mode the loss of a sample depends on the chunk it is normalised
    with, so the parts are the set's own chunks; otherwise every sample's loss is its own
    and the set is cut into ``num_batches`` contiguous parts of near-equal size.
    """
    if bn_mode == "train" and batchnorm_layers(model):
        yield from measurement.chunks()
        return
    for indices in np.array_split(np.arange(measurement.size), min(num_batches, measurement.size)):
        yield measurement.part(int(indices[0]), int(indices[-1]) + 1)


def batch_rayleigh_quotients(
    model: nn.Module,
    point: torch.Tensor,
    vector: torch.Tensor | NDArray[np.float64],
    measurement: MeasurementSet,
    *,
    bn_mode: BatchNormMode = "train",
    num_batches: int = SHARPNESS_ERROR_BATCHES,
    shard: Shard = SINGLE_PROCESS,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(vᵀ H_b v / vᵀ v for each part b, the parts' sizes): H_b is the Hessian of the mean
    loss over part b (see ``_error_batches`` for the parts). The size-weighted mean of the
    quotients is the Rayleigh quotient of the whole set's Hessian. With a ``shard`` of several
    processes each part is computed by the process that owns it and shared with the others."""
    check_batchnorm_mode(bn_mode)
    layout = ParameterLayout.of(model)
    leaf = point.detach().clone().requires_grad_(True)
    direction = torch.as_tensor(np.asarray(vector), dtype=point.dtype, device=point.device).reshape(-1)
    direction = direction / torch.linalg.vector_norm(direction)
    # "recompute": statistics of the whole set at the point, held fixed, as the value uses.
    buffers = recomputed_batchnorm_statistics(model, point, measurement) if bn_mode == "recompute" else {}
    forward_mode: BatchNormMode = "eval" if bn_mode == "recompute" else bn_mode
    held = _differing_from_the_model(model, {**layout.unflatten(point), **buffers})
    parts = list(_error_batches(model, measurement, bn_mode, num_batches))
    # One slot per part, filled by its owner and zero elsewhere: the sum over processes is
    # then each part's own value, exactly.
    quotients = torch.zeros(len(parts), dtype=torch.float64)
    sizes = torch.tensor([float(batch_size(batch)) for batch in parts], dtype=torch.float64)
    with measuring(model, forward_mode):
        for number, batch in enumerate(parts):
            if not shard.owns(number):
                continue
            with twice_differentiable_attention(), _model_holding(model, held):
                views = layout.unflatten(leaf)
                call = model_call(model, {**views, **buffers})
                loss = measurement.losses(call, batch).mean()
                gradient = _gradient_saying_unused(loss, layout, views)
                (curvature,) = torch.autograd.grad(gradient, leaf, grad_outputs=direction)
            quotients[number] = (direction.double() @ curvature.detach().double()).cpu()
    return shard.summed(quotients).numpy(), sizes.numpy()


def top_eigenvalue_standard_error(
    model: nn.Module,
    point: torch.Tensor,
    vector: torch.Tensor | NDArray[np.float64],
    measurement: MeasurementSet,
    *,
    bn_mode: BatchNormMode = "train",
    num_batches: int = SHARPNESS_ERROR_BATCHES,
    shard: Shard = SINGLE_PROCESS,
) -> float:
    """Standard error of the top Hessian eigenvalue over the measurement set, by batch means.

    The set is a sample; the eigenvalue of its mean Hessian H = Σ_b w_b H_b varies with it.
    To first order in the sampling noise δH, the top eigenvalue moves by vᵀ δH v along its
    unit eigenvector v (Hellmann-Feynman; valid while the noise is small against the gap
    to the next eigenvalue), so its sampling error is that of the weighted mean of the batch
    quotients q_b = vᵀ H_b v: SE² = B/(B−1) Σ_b w_b² (q_b − λ)², w_b = n_b / n (the usual
    batch-means estimate; for equal parts it is sd(q)/√B). One pass of products over the set,
    against B eigen-solves for a jackknife. It does not see the eigenvalue's upward bias
    (the top eigenvalue of a noisy matrix is biased high, at second order) nor the noise of
    v itself, which enters at second order too.
    """
    quotients, sizes = batch_rayleigh_quotients(
        model, point, vector, measurement, bn_mode=bn_mode, num_batches=num_batches, shard=shard
    )
    return _batch_means_standard_error(quotients, sizes)


def _batch_means_standard_error(quotients: NDArray[np.float64], sizes: NDArray[np.float64]) -> float:
    if quotients.size < 2:
        raise ValueError(
            "the standard error needs at least two disjoint parts of the measurement set; in batch-norm "
            "'train' mode the parts are the set's chunks: use a chunk size below the set size"
        )
    weights = sizes / sizes.sum()
    value = float(weights @ quotients)
    count = quotients.size
    return float(np.sqrt(count / (count - 1) * np.sum(weights**2 * (quotients - value) ** 2)))


@dataclass(frozen=True)
class SharpnessEstimate:
    """The top eigenvalue, its standard error over the measurement set (None when the set
    gives fewer than two disjoint parts: one chunk in batch-norm "train" mode), and what it cost."""

    value: float
    standard_error: float | None
    products: int
    batches: int
    # The unit eigenvector (float64, flat like the parameters): the next step's warm start.
    vector: NDArray[np.float64]


def sharpness_with_standard_error(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    *,
    bn_mode: BatchNormMode = "train",
    which: EigenvalueChoice = "LA",
    seed: int = 0,
    num_batches: int = SHARPNESS_ERROR_BATCHES,
    shard: Shard = SINGLE_PROCESS,
    relative_tolerance: float = SHARPNESS_RELATIVE_ERROR,
    warm_start: NDArray[np.float64] | None = None,
) -> SharpnessEstimate:
    """``top_hessian_eigenpair`` followed by ``top_eigenvalue_standard_error`` along its vector
    (with a ``shard``: shared out over the processes, the same result on every one)."""
    pair = top_hessian_eigenpair(
        model,
        point,
        measurement,
        bn_mode=bn_mode,
        which=which,
        seed=seed,
        relative_tolerance=relative_tolerance,
        shard=shard,
        warm_start=warm_start,
    )
    quotients, sizes = batch_rayleigh_quotients(
        model, point, pair.vector, measurement, bn_mode=bn_mode, num_batches=num_batches, shard=shard
    )
    standard_error = _batch_means_standard_error(quotients, sizes) if quotients.size >= 2 else None
    return SharpnessEstimate(pair.value, standard_error, pair.products, int(quotients.size), pair.vector)
