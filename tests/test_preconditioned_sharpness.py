"""Preconditioned sharpness against dense eigenvalues, the preconditioner against the
optimizers' recursions redone by hand, and the stability thresholds' values."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.preconditioned_sharpness import (
    adam_stability_threshold,
    optimizer_preconditioner,
    preconditioned_sharpness,
    rmsprop_stability_threshold,
)
from tests.helpers import (
    FLOAT64_REORDERED,
    LANCZOS_VS_DENSE,
    Tolerance,
    assert_close,
    classification_data,
    mean_loss_function,
    mlp,
)

# The eigenvalues of the non-symmetric P⁻¹H by np.linalg.eigvals against eigvalsh of
# P^{-1/2} H P^{-1/2}: two float64 eigen-solvers of a 51 × 51 matrix, ~1e-13 apart.
SIMILAR_MATRICES = Tolerance(1e-9, 1e-12, "two float64 eigen-solvers of similar 51x51 matrices")

STEPS = 3


def setting() -> tuple[nn.Module, MeasurementSet]:
    model = mlp(11, dtype=torch.float64)
    inputs, targets = classification_data(12, 30, dtype=torch.float64)
    return model, MeasurementSet(inputs, targets, chunk_size=8)


def test_the_top_eigenvalue_equals_dense_eigenvalues_of_the_preconditioned_hessian() -> None:
    model, measurement = setting()
    point = flat_parameters(model)
    # A preconditioner spanning two orders of magnitude, as Adam's does across layers.
    diagonal = torch.logspace(-1.0, 1.0, point.numel(), dtype=torch.float64)[
        torch.randperm(point.numel(), generator=torch.Generator().manual_seed(0))
    ]
    hessian = torch.autograd.functional.hessian(mean_loss_function(model, measurement), point).numpy()
    inverse_root = 1.0 / np.sqrt(diagonal.numpy())
    dense = np.linalg.eigvalsh(inverse_root[:, None] * hessian * inverse_root[None, :])
    result = preconditioned_sharpness(model, point, measurement, diagonal)
    assert_close(result.value, dense[-1], LANCZOS_VS_DENSE, "top eigenvalue of P^{-1/2} H P^{-1/2}")
    # The same as P⁻¹H's, and not H's own: the preconditioner matters in this setting.
    unsymmetric = np.linalg.eigvals(hessian / diagonal.numpy()[:, None])
    assert_close(np.max(unsymmetric.real), dense[-1], SIMILAR_MATRICES, "top eigenvalue of P⁻¹H")
    assert abs(np.linalg.eigvalsh(hessian)[-1] - dense[-1]) > 0.1 * abs(dense[-1])


def test_a_preconditioner_that_does_not_fit_is_refused() -> None:
    model, measurement = setting()
    point = flat_parameters(model)
    with pytest.raises(ValueError, match="entries for"):
        preconditioned_sharpness(model, point, measurement, torch.ones(point.numel() + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive"):
        preconditioned_sharpness(model, point, measurement, torch.zeros(point.numel(), dtype=torch.float64))


# ------------------------------------------------------------ the preconditioner by hand
def trained_gradients(
    model: nn.Module, measurement: MeasurementSet, optimizer: torch.optim.Optimizer
) -> list[np.ndarray]:
    """Full-batch steps; the flat gradient each step used."""
    gradients = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(measurement.inputs), measurement.targets).backward()
        gradients.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).numpy())
        optimizer.step()
    return gradients


def adam_by_hand(gradients: list[np.ndarray], beta2: float, eps: float) -> np.ndarray:
    second_moment = np.zeros_like(gradients[0])
    for gradient in gradients:
        second_moment = beta2 * second_moment + (1 - beta2) * gradient**2
    return np.sqrt(second_moment / (1 - beta2 ** len(gradients))) + eps


def rmsprop_by_hand(gradients: list[np.ndarray], alpha: float, eps: float, centered: bool) -> np.ndarray:
    square, mean = np.zeros_like(gradients[0]), np.zeros_like(gradients[0])
    for gradient in gradients:
        square = alpha * square + (1 - alpha) * gradient**2
        mean = alpha * mean + (1 - alpha) * gradient
    return np.sqrt(square - mean**2 if centered else square) + eps


OPTIMIZERS: dict[str, tuple[Callable[[nn.Module], torch.optim.Optimizer], Callable[[list[np.ndarray]], np.ndarray]]] = {
    "adam": (
        lambda model: torch.optim.Adam(model.parameters(), lr=0.05, betas=(0.9, 0.95), eps=1e-3),
        lambda gradients: adam_by_hand(gradients, 0.95, 1e-3),
    ),
    "adamw": (
        lambda model: torch.optim.AdamW(model.parameters(), lr=0.05, betas=(0.8, 0.9), eps=1e-4),
        lambda gradients: adam_by_hand(gradients, 0.9, 1e-4),
    ),
    "rmsprop": (
        lambda model: torch.optim.RMSprop(model.parameters(), lr=0.01, alpha=0.9, eps=1e-3),
        lambda gradients: rmsprop_by_hand(gradients, 0.9, 1e-3, centered=False),
    ),
    "rmsprop-centered": (
        lambda model: torch.optim.RMSprop(model.parameters(), lr=0.01, alpha=0.9, eps=1e-3, centered=True),
        lambda gradients: rmsprop_by_hand(gradients, 0.9, 1e-3, centered=True),
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_preconditioner_equals_the_optimizer_recursion_done_by_hand(name: str) -> None:
    build, by_hand = OPTIMIZERS[name]
    model, measurement = setting()
    optimizer = build(model)
    gradients = trained_gradients(model, measurement, optimizer)
    assert_close(optimizer_preconditioner(optimizer, model), by_hand(gradients), FLOAT64_REORDERED, name)


def test_an_optimizer_without_state_or_of_another_kind_is_refused() -> None:
    model, _ = setting()
    with pytest.raises(ValueError, match="no state"):
        optimizer_preconditioner(torch.optim.Adam(model.parameters()), model)
    with pytest.raises(TypeError, match="SGD"):
        optimizer_preconditioner(torch.optim.SGD(model.parameters(), lr=0.1), model)


def test_the_stability_thresholds() -> None:
    assert adam_stability_threshold(0.01, 0.9) == pytest.approx(38 / 0.01, rel=1e-12)
    assert adam_stability_threshold(0.01, 0.0) == pytest.approx(rmsprop_stability_threshold(0.01), rel=1e-12)
    assert rmsprop_stability_threshold(0.5) == 4.0
