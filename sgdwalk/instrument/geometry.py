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
        # torch.cat writes a new tensor: that is the copy (no second one).
        return torch.cat([p.detach().reshape(-1) for p in trainable_parameters(model)])


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
    with torch.no_grad():
        # One new vector (torch.cat's), the decay added to its slices in place: the values of
        # grad + decay · θ formed piece by piece, without a second parameter-sized copy.
        flat = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad.detach()).reshape(-1) for p in parameters])
        first = 0
        for parameter, decay in zip(parameters, decays, strict=True):
            if decay:
                flat[first : first + parameter.numel()].add_(decay * parameter.detach().reshape(-1))
            first += parameter.numel()
    return flat


def _check_same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"vectors differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


# Elements of a vector widened to float64 at a time: an 8 MiB temporary. A vector of at most
# this many elements takes one block, so its results are those of whole-vector float64
# arithmetic bit for bit; a longer one is summed block by block, which differs from that only
# in summation order (a few ulps of float64, far below float32's resolution of the vectors),
# and never holds a float64 copy of the whole vector (two parameter copies' worth at scale).
_WIDENING_BLOCK = 1 << 20


def _blocks(numel: int) -> range:
    return range(0, numel, _WIDENING_BLOCK)


def _largest(vector: torch.Tensor) -> float:
    """max |vector_i|, read in the vector's own dtype (exact: widening does not change it)."""
    return float(torch.linalg.vector_norm(vector, ord=math.inf)) if vector.numel() else 0.0


def _scale(largest: float) -> float:
    """The divisor that brings a vector's entries into [−1, 1]; 1 where none exists."""
    return 1.0 if largest == 0.0 or not math.isfinite(largest) else largest


def _scaled(vector: torch.Tensor, *, owned: bool = False) -> tuple[torch.Tensor, float]:
    """``vector / m`` and ``m = max |vector_i|``, in float64 (vectors of one block only).

    Norms are taken of the scaled vector and multiplied back: the squares of a gradient near
    float64's square root (a diverging run) would overflow although its norm does not.
    A float64 copy made here (or handed over as ``owned``) is divided in place, and the
    largest magnitude is read without forming |vector|.
    """
    as_double = vector.detach().double().reshape(-1)
    owned = owned or vector.dtype != torch.float64  # .double() copied: the copy is ours
    largest = _largest(as_double)
    scale = _scale(largest)
    if scale != largest:
        return as_double, 1.0
    return (as_double.div_(largest) if owned else as_double / largest), largest


def _flat(vector: torch.Tensor) -> torch.Tensor:
    return vector.detach().reshape(-1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos∠(a, b) in float64; 0.0 when either vector is zero (the angle is undefined)."""
    _check_same_shape(a, b)
    a, b = _flat(a), _flat(b)
    if a.numel() <= _WIDENING_BLOCK:
        (a_unit, _), (b_unit, _) = _scaled(a), _scaled(b)
        norm_product = float(torch.linalg.vector_norm(a_unit) * torch.linalg.vector_norm(b_unit))
        if norm_product < COSINE_NORM_PRODUCT_FLOOR:
            return 0.0
        return float(torch.dot(a_unit, b_unit)) / norm_product
    a_scale, b_scale = _scale(_largest(a)), _scale(_largest(b))
    dots, a_squares, b_squares = [], [], []
    for first in _blocks(a.numel()):
        a_unit = a[first : first + _WIDENING_BLOCK].to(torch.float64, copy=True).div_(a_scale)
        b_unit = b[first : first + _WIDENING_BLOCK].to(torch.float64, copy=True).div_(b_scale)
        dots.append(float(torch.dot(a_unit, b_unit)))
        a_squares.append(float(torch.dot(a_unit, a_unit)))
        b_squares.append(float(torch.dot(b_unit, b_unit)))
    norm_product = math.sqrt(_total(a_squares)) * math.sqrt(_total(b_squares))
    if not norm_product >= COSINE_NORM_PRODUCT_FLOOR:  # NaN propagates below, as in one block
        return math.nan if math.isnan(norm_product) else 0.0
    return _total(dots) / norm_product


def norm(a: torch.Tensor) -> float:
    """‖a‖₂ in float64, without overflow for entries near float64's square root."""
    a = _flat(a)
    if a.numel() <= _WIDENING_BLOCK:
        scaled, largest = _scaled(a)
        return largest * float(torch.linalg.vector_norm(scaled))
    scale = _scale(_largest(a))
    squares = [
        _block_squares(a[first : first + _WIDENING_BLOCK].to(torch.float64, copy=True).div_(scale))
        for first in _blocks(a.numel())
    ]
    return scale * math.sqrt(_total(squares))


def _block_squares(unit: torch.Tensor) -> float:
    return float(torch.dot(unit, unit))


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖₂ in float64."""
    _check_same_shape(a, b)
    a, b = _flat(a), _flat(b)

    def difference(first: int) -> torch.Tensor:
        # One float64 copy of a's block, b's subtracted in place: the values of a.double() −
        # b.double(). (torch widens b into a temporary of the block's size for the mixed-dtype
        # subtraction: elementwise, the same bits.)
        return a[first : first + _WIDENING_BLOCK].to(torch.float64, copy=True).sub_(b[first : first + _WIDENING_BLOCK])

    if a.numel() <= _WIDENING_BLOCK:
        scaled, largest = _scaled(difference(0), owned=True)
        return largest * float(torch.linalg.vector_norm(scaled))
    # Two passes, the difference formed twice block by block: its largest entry, then its squares.
    scale = _scale(max((_largest(difference(first)) for first in _blocks(a.numel())), key=_nan_first))
    squares = [_block_squares(difference(first).div_(scale)) for first in _blocks(a.numel())]
    return scale * math.sqrt(_total(squares))


def _total(values: list[float]) -> float:
    """The sum of the blocks' parts, correctly rounded (``math.fsum``) where they are finite;
    a plain sum otherwise, which propagates inf and NaN as torch's sums do (fsum refuses inf − inf)."""
    return math.fsum(values) if all(math.isfinite(value) for value in values) else sum(values)


def _nan_first(value: float) -> float:
    """Order for ``max`` that ranks NaN above everything, as torch's reductions propagate it."""
    return math.inf if math.isnan(value) else value
