"""The curvature of one layer: the top eigenvalues of the Hessian block of a parameter subset.

For the parameters S (a layer's weight and bias, say) the block H_SS = P H Pᵀ, P the rows of
the identity at S's coordinates, is the Hessian of the loss as a function of S alone, the
other parameters held at the point. Its product with a vector v of S is P H (Pᵀv): a full
Hessian-vector product of v padded with zeros outside S, read back at S. Lanczos runs on
that projected operator, so the block is never formed and each product costs one full one.
By Cauchy's interlacing, the block's top eigenvalue lies below the full Hessian's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.curvature import Matvec, TopEigenvalues, lanczos_top_eigenvalues
from sgdwalk.instrument.distributed import SINGLE_PROCESS, Shard
from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout
from sgdwalk.instrument.sharpness import hessian_vector_product_operator, numpy_matvec
from sgdwalk.instrument.tolerances import SHARPNESS_RELATIVE_ERROR


def _selects(name: str, parameter: str) -> bool:
    # A module's name selects its parameters ("0" → "0.weight", "0.bias"), as state_dict keys read.
    return parameter == name or parameter.startswith(name + ".")


def parameter_block_indices(model: nn.Module, names: Sequence[str]) -> NDArray[np.int64]:
    """The coordinates, in the flat parameter vector, of the trainable parameters ``names``
    name: parameter names ("0.weight") or module names ("0", all of that module's)."""
    if not names:
        raise ValueError("name at least one parameter or module for the Hessian block")
    layout = ParameterLayout.of(model)
    sizes = [int(np.prod(shape)) for shape in layout.shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    unmatched = [name for name in names if not any(_selects(name, parameter) for parameter in layout.names)]
    if unmatched:
        raise ValueError(
            f"no trainable parameter is named by {unmatched}; the trainable parameters are {list(layout.names)}"
        )
    chosen = [
        np.arange(offsets[index], offsets[index + 1])
        for index, parameter in enumerate(layout.names)
        if any(_selects(name, parameter) for name in names)
    ]
    return np.concatenate(chosen).astype(np.int64)


def block_matvec(matvec: Matvec, indices: NDArray[np.int64], dimension: int) -> Matvec:
    """v ↦ P H Pᵀ v: ``matvec`` (H on all ``dimension`` coordinates) restricted to ``indices``."""

    def product(vector: NDArray[np.float64]) -> NDArray[np.float64]:
        padded = np.zeros(dimension)
        padded[indices] = vector
        return np.asarray(matvec(padded), dtype=np.float64)[indices]

    return product


def top_block_hessian_eigenvalues(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    names: Sequence[str],
    k: int = 1,
    *,
    bn_mode: BatchNormMode = "train",
    seed: int = 0,
    relative_tolerance: float = SHARPNESS_RELATIVE_ERROR,
    max_iterations: int | None = None,
    reuse_graph: bool | None = None,
    shard: Shard = SINGLE_PROCESS,
) -> TopEigenvalues:
    """The k largest (algebraic) eigenvalues of the Hessian block of the parameters ``names``
    (see ``parameter_block_indices``) at ``point``, descending, each good to
    ``relative_tolerance`` of itself; Lanczos starts from a unit vector drawn with ``seed``."""
    indices = parameter_block_indices(model, names)
    product = hessian_vector_product_operator(model, point, measurement, bn_mode, reuse_graph, shard)
    block = block_matvec(numpy_matvec(point, product), indices, point.numel())
    start = np.random.default_rng(seed).standard_normal(indices.size)
    return lanczos_top_eigenvalues(block, start, k, relative_error=relative_tolerance, max_products=max_iterations)
