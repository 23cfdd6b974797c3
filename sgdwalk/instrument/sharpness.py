"""Sharpness: the top eigenvalue of the Hessian of the measurement-set loss.

Hessian-vector products by double backward through ``functional_call`` at a given
parameter vector (the model is not modified), fed to Lanczos (``scipy.sparse.linalg.eigsh``)
with a seeded start vector. ``which="LA"`` (default) is the largest algebraic eigenvalue,
``which="LM"`` the one of largest magnitude: they differ when the Hessian has a large
negative eigenvalue, and the suite says which one it means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import nn
from torch.func import functional_call

from sgdwalk.instrument.batchnorm import BatchNormMode, check_batchnorm_mode, measuring
from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout, recomputed_batchnorm_statistics
from sgdwalk.instrument.tolerances import LANCZOS_RELATIVE_TOLERANCE

EigenvalueChoice = Literal["LA", "LM"]

# Below this many parameters eigsh cannot run (it needs k < n); the Hessian is then built
# column by column from Hessian-vector products and diagonalised densely, which is exact.
_DENSE_FALLBACK_DIMENSION = 3


def hessian_vector_product_operator(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    bn_mode: BatchNormMode = "train",
    reuse_graph: bool | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v ↦ H v at ``point`` for the mean loss over the measurement set.

    With ``reuse_graph`` (default: when the set is a single chunk) the gradient and its
    graph are built once and every product is one backward through it; otherwise each
    product re-runs the chunks, so memory stays bounded by the chunk size.
    """
    check_batchnorm_mode(bn_mode)
    layout = ParameterLayout.of(model)
    leaf = point.detach().clone().requires_grad_(True)
    single_chunk = measurement.size <= measurement.chunk_size
    reuse = single_chunk if reuse_graph is None else reuse_graph
    # "recompute": statistics re-estimated at the point, then held fixed (eval mode), as in
    # losses_at_points; without this the model's own running statistics would be used.
    buffers = recomputed_batchnorm_statistics(model, point, measurement) if bn_mode == "recompute" else {}
    forward_mode: BatchNormMode = "eval" if bn_mode == "recompute" else bn_mode

    def chunk_gradient(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        outputs = functional_call(model, {**layout.unflatten(leaf), **buffers}, (inputs,))
        loss = measurement.loss_fn(outputs, targets).sum() / measurement.size
        (gradient,) = torch.autograd.grad(loss, leaf, create_graph=True)
        return gradient

    if reuse:
        with measuring(model, forward_mode):
            full_gradient = sum(chunk_gradient(inputs, targets) for inputs, targets in measurement.chunks())

        def product(vector: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad(full_gradient, leaf, grad_outputs=vector, retain_graph=True)
            return hv.detach()

        return product

    def product_by_chunks(vector: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(leaf)
        with measuring(model, forward_mode):
            for inputs, targets in measurement.chunks():
                gradient = chunk_gradient(inputs, targets)
                (hv,) = torch.autograd.grad(gradient, leaf, grad_outputs=vector)
                total += hv.detach()
        return total

    return product_by_chunks


def top_hessian_eigenvalue(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    *,
    bn_mode: BatchNormMode = "train",
    which: EigenvalueChoice = "LA",
    seed: int = 0,
    relative_tolerance: float = LANCZOS_RELATIVE_TOLERANCE,
    max_iterations: int | None = None,
    reuse_graph: bool | None = None,
) -> float:
    """The largest (``LA``) or largest-magnitude (``LM``) Hessian eigenvalue at ``point``."""
    if which not in ("LA", "LM"):
        raise ValueError(f"which must be 'LA' (largest algebraic) or 'LM' (largest magnitude), got {which!r}")
    product = hessian_vector_product_operator(model, point, measurement, bn_mode, reuse_graph)
    dimension = point.numel()
    dtype, device = point.dtype, point.device

    def matvec(vector: NDArray[np.float64]) -> NDArray[np.float64]:
        as_tensor = torch.as_tensor(np.ravel(vector), dtype=dtype, device=device)
        return product(as_tensor).double().cpu().numpy()

    if dimension < _DENSE_FALLBACK_DIMENSION:
        columns = [matvec(column) for column in np.eye(dimension)]
        hessian = np.array(columns).T
        eigenvalues = np.linalg.eigvalsh(0.5 * (hessian + hessian.T))
        return float(eigenvalues[-1] if which == "LA" else eigenvalues[np.argmax(np.abs(eigenvalues))])

    operator = LinearOperator((dimension, dimension), matvec=matvec, dtype=np.float64)
    start = np.random.default_rng(seed).standard_normal(dimension)
    if not np.any(matvec(start)):
        # H v0 = 0 for a random v0 means H = 0 (almost surely): ARPACK would stop on a zero vector.
        return 0.0
    values = eigsh(
        operator, k=1, which=which, v0=start, tol=relative_tolerance, maxiter=max_iterations, return_eigenvectors=False
    )
    return float(values[0])
