"""Preconditioned sharpness: the top eigenvalue of P^{-1/2} H P^{-1/2}, the edge of stability
of adaptive optimizers (Cohen et al. 2022, "Adaptive gradient methods at the edge of stability").

An optimizer that steps θ ← θ − η P⁻¹ g with a diagonal P sees the Hessian through P⁻¹H,
whose eigenvalues are those of the symmetric P^{-1/2} H P^{-1/2} (a similarity transform),
so Lanczos applies as it does to H: the operator is v ↦ P^{-1/2} H P^{-1/2} v.

For Adam and AdamW P = diag(sqrt(v̂) + ε), v̂ = exp_avg_sq / (1 − β₂^t) (their own step's
denominator). Cohen et al. fold Adam's first-moment correction 1 − β₁^t into P as well;
it is left out here, as the thresholds below take t large (β₁^t < 1 % after 44
steps at β₁ = 0.9). For RMSprop P = diag(sqrt(square_avg) + ε), centred: square_avg −
grad_avg², as torch's RMSprop divides by (it has no bias correction).

The thresholds at which gradient descent with this preconditioner, frozen, stops being
stable on a quadratic: 2/η for RMSprop (no momentum), (2 + 2β₁)/((1 − β₁)η) for Adam's
heavy-ball momentum β₁ (38/η at β₁ = 0.9).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.sharpness import LanczosResult, hessian_vector_product_operator, lanczos_top_eigenpair
from sgdwalk.instrument.tolerances import SHARPNESS_RELATIVE_ERROR


def preconditioned_sharpness(
    model: nn.Module,
    point: torch.Tensor,
    measurement: MeasurementSet,
    preconditioner: torch.Tensor,
    *,
    bn_mode: BatchNormMode = "train",
    seed: int = 0,
    relative_tolerance: float = SHARPNESS_RELATIVE_ERROR,
    max_iterations: int | None = None,
) -> LanczosResult:
    """The largest (algebraic) eigenvalue of P^{-1/2} H P^{-1/2} at ``point``, P =
    diag(``preconditioner``) flat like ``point``; its vector is the unit eigenvector of that
    symmetric operator (P^{-1/2} times it is the eigenvector of P⁻¹H). Lanczos starts from
    a random vector drawn with ``seed``."""
    diagonal = preconditioner.detach().reshape(-1)
    if diagonal.shape != point.reshape(-1).shape:
        raise ValueError(f"the preconditioner has {diagonal.numel()} entries for {point.numel()} parameters")
    if not bool(torch.all(diagonal > 0)):
        raise ValueError("the preconditioner's diagonal must be positive (an optimizer's sqrt(v̂) + eps is)")
    inverse_root = diagonal.to(point.dtype).rsqrt()
    product = hessian_vector_product_operator(model, point, measurement, bn_mode)

    def matvec(vector: NDArray[np.float64]) -> NDArray[np.float64]:
        as_tensor = torch.as_tensor(np.ravel(vector), dtype=point.dtype, device=point.device)
        return (inverse_root * product(inverse_root * as_tensor)).double().cpu().numpy()

    start = np.random.default_rng(seed).standard_normal(point.numel())
    return lanczos_top_eigenpair(
        matvec, start, which="LA", relative_error=relative_tolerance, max_products=max_iterations
    )


def optimizer_preconditioner(optimizer: torch.optim.Optimizer, model: nn.Module) -> torch.Tensor:
    """P's diagonal, sqrt(v̂) + ε, of a torch Adam, AdamW or RMSprop for ``model``'s trainable
    parameters, flat in ``ParameterLayout`` order (see the module's docstring for v̂)."""
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)):
        raise TypeError(f"a preconditioner is read from Adam, AdamW or RMSprop, not {type(optimizer).__name__}")
    groups = {id(parameter): group for group in optimizer.param_groups for parameter in group["params"]}
    pieces = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        state = optimizer.state.get(parameter, {})
        if id(parameter) not in groups or not state:
            raise ValueError(f"the optimizer holds no state for {name}: it must have taken a step on it")
        group = groups[id(parameter)]
        if isinstance(optimizer, torch.optim.RMSprop):
            pieces.append(_rmsprop_diagonal(state, group).reshape(-1))
        else:
            pieces.append(_adam_diagonal(state, group).reshape(-1))
    return torch.cat(pieces)


def _adam_diagonal(state: dict[str, Any], group: dict[str, Any]) -> torch.Tensor:
    beta2 = float(group["betas"][1])
    step = float(state["step"])
    # amsgrad divides by the running maximum of exp_avg_sq instead.
    second_moment: torch.Tensor = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
    corrected = second_moment.detach() / (1.0 - beta2**step)
    return corrected.sqrt() + float(group["eps"])


def _rmsprop_diagonal(state: dict[str, Any], group: dict[str, Any]) -> torch.Tensor:
    square_average: torch.Tensor = state["square_avg"].detach()
    if group.get("centered"):
        square_average = square_average - state["grad_avg"].detach() ** 2
    return square_average.sqrt() + float(group["eps"])


def rmsprop_stability_threshold(learning_rate: float) -> float:
    """2/η: preconditioned gradient descent without momentum diverges above it."""
    return 2.0 / learning_rate


def adam_stability_threshold(learning_rate: float, beta1: float) -> float:
    """(2 + 2β₁)/((1 − β₁)η): heavy-ball momentum β₁ with step η(1 − β₁) (Adam's EMA form)
    diverges on a quadratic above it; 38/η at β₁ = 0.9."""
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * learning_rate)
