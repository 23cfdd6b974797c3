"""Vectors of the walk: flattened parameters and gradients, their cosine, distance and norm.

Parameters means ``model.parameters()`` only: batch-norm running statistics are buffers, not
coordinates of the landscape, and never enter a distance or a norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sgdwalk.instrument.tolerances import COSINE_NORM_PRODUCT_FLOOR


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the walk moves (those that require a gradient), in a fixed order."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(f"{type(model).__name__} has no trainable parameters: there is no walk to measure")
    return parameters


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """A detached copy of all trainable parameters as one vector."""
    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1) for p in trainable_parameters(model)]).clone()


def flat_gradient(model: nn.Module, weight_decay: float | Sequence[float] = 0.0) -> torch.Tensor:
    """The gradient the optimizer is about to use, as one vector.

    ``weight_decay`` adds ``weight_decay · θ`` as torch.optim.SGD does inside its step (coupled
    decay: the authors' g includes the decay term); one number for every parameter, or one per
    parameter of ``trainable_parameters`` (each optimizer group's own, ``optimizer_groups``).
    A parameter without ``.grad`` contributes zeros, as it does to an SGD step.
    """
    parameters = trainable_parameters(model)
    decays = [weight_decay] * len(parameters) if isinstance(weight_decay, (int, float)) else list(weight_decay)
    if len(decays) != len(parameters):
        raise ValueError(f"{len(decays)} weight decays for {len(parameters)} trainable parameters")
    pieces = []
    with torch.no_grad():
        for parameter, decay in zip(parameters, decays, strict=True):
            grad = parameter.grad
            piece = torch.zeros_like(parameter) if grad is None else grad.detach().clone()
            if decay:
                piece = piece + decay * parameter.detach()
            pieces.append(piece.reshape(-1))
    return torch.cat(pieces)


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"vectors differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


def _scaled(vector: torch.Tensor, *, owned: bool = False) -> tuple[torch.Tensor, float]:
    """``vector / m`` and ``m = max |vector_i|``, in float64.

    Norms are taken of the scaled vector and multiplied back: the squares of a gradient near
    float64's square root (a diverging run) would overflow although its norm does not.
    A float64 copy made here (or handed over as ``owned``) is divided in place, and the
    largest magnitude is read without forming |vector|: a parameter-sized float64 vector is
    the only one this makes (the same values as dividing a second copy).
    """
    as_double = vector.detach().double().reshape(-1)
    owned = owned or vector.dtype != torch.float64  # .double() copied: the copy is ours
    largest = float(torch.linalg.vector_norm(as_double, ord=math.inf)) if as_double.numel() else 0.0
    if largest == 0.0 or not math.isfinite(largest):
        return as_double, 1.0
    return (as_double.div_(largest) if owned else as_double / largest), largest


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos∠(a, b) in float64; 0.0 when either vector is zero (the angle is undefined)."""
    _check_same_shape(a, b)
    (a_unit, _), (b_unit, _) = _scaled(a), _scaled(b)
    norm_product = float(torch.linalg.vector_norm(a_unit) * torch.linalg.vector_norm(b_unit))
    if norm_product < COSINE_NORM_PRODUCT_FLOOR:
        return 0.0
    return float(torch.dot(a_unit, b_unit)) / norm_product


def norm(a: torch.Tensor) -> float:
    """‖a‖₂ in float64, without overflow for entries near float64's square root."""
    return _norm(a)


def _norm(a: torch.Tensor, *, owned: bool = False) -> float:
    scaled, largest = _scaled(a, owned=owned)
    return largest * float(torch.linalg.vector_norm(scaled))


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖₂ in float64."""
    _check_same_shape(a, b)
    # One float64 copy of a, b subtracted from it in place: the values of a.double() −
    # b.double() without their two extra copies. torch widens b into a temporary of its own
    # size for a mixed-dtype subtraction, so b goes in blocks (elementwise: the same bits).
    difference = a.detach().to(torch.float64, copy=True).reshape(-1)
    subtrahend = b.detach().reshape(-1)
    for first in range(0, difference.numel(), _WIDENING_BLOCK):
        difference[first : first + _WIDENING_BLOCK].sub_(subtrahend[first : first + _WIDENING_BLOCK])
    return _norm(difference, owned=True)


# Elements of a float32 vector widened to float64 at a time in ``distance``: an 8 MiB temporary.
_WIDENING_BLOCK = 1 << 20
