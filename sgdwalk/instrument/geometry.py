"""Vectors of the walk: flattened parameters and gradients, their cosine, distance and norm.

Parameters means ``model.parameters()`` only: batch-norm running statistics are buffers, not
coordinates of the landscape, and never enter a distance or a norm.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sgdwalk.instrument.tolerances import COSINE_NORM_PRODUCT_FLOOR


def named_trainable_parameters(model: nn.Module, *, required: bool = True) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the parameters the walk moves (those that require a gradient), in
    ``model.parameters()`` order; ValueError when there are none, unless not ``required``."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if required and not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters: there is no walk to measure")
    return named


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters the walk moves (those that require a gradient), in a fixed order."""
    return [p for _, p in named_trainable_parameters(model)]


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """A detached copy of all trainable parameters as one vector."""
    with torch.no_grad():
        # torch.cat writes a new tensor: that is the copy (no second one).
        return torch.cat([p.detach().reshape(-1) for p in trainable_parameters(model)])


def parameters_digest(model: nn.Module) -> str:
    """SHA-256 of the model's trainable parameters (their values, in order): which weights a
    walk's state was saved at, to tell a checkpoint's own weights from others."""
    # Their bytes (as uint8: numpy has no bfloat16).
    return hashlib.sha256(flat_parameters(model).cpu().view(torch.uint8).numpy().tobytes()).hexdigest()


def flat_gradient(
    model: nn.Module, weight_decay: float | Sequence[float] = 0.0, inverse_scale: float | None = None
) -> torch.Tensor:
    """The gradient the optimizer is about to use, as one vector.

    ``weight_decay`` adds ``weight_decay · θ`` as torch.optim.SGD does inside its step (coupled
    decay: the authors' g includes the decay term); one number for every parameter, or one per
    parameter of ``trainable_parameters`` (each optimizer group's own, ``optimizer_groups``).
    A parameter without ``.grad`` contributes zeros, its decay included: torch's optimizers
    skip it, so it does not move. ``inverse_scale``: the gradients still carry a gradient
    scaler's scale, which the optimizer's step takes off before it adds the decay
    (``optimizer_groups.amp_inverse_scale``); the vector is the unscaled one.
    """
    parameters = trainable_parameters(model)
    decays = _decays(weight_decay, parameters)
    with torch.no_grad():
        # One new vector (torch.cat's), the decay added to its slices in place: the values of
        # grad + decay · θ formed piece by piece, without a second parameter-sized copy.
        flat = torch.cat([(torch.zeros_like(p) if p.grad is None else _dense(p.grad)).reshape(-1) for p in parameters])
        if inverse_scale is not None:
            flat.mul_(inverse_scale)
        first = 0
        for parameter, decay in zip(parameters, decays, strict=True):
            # torch's optimizers skip a parameter without a gradient, its decay too.
            if decay and parameter.grad is not None:
                flat[first : first + parameter.numel()].add_(decay * parameter.detach().reshape(-1))
            first += parameter.numel()
    return flat


def _dense(gradient: torch.Tensor) -> torch.Tensor:
    """A gradient as a strided tensor: a sparse one (``nn.Embedding(sparse=True)``, for
    ``SparseAdam``) made dense, its repeated indices summed, as the optimizer's step applies it."""
    gradient = gradient.detach()
    return gradient if gradient.layout == torch.strided else gradient.to_dense()


def _decays(weight_decay: float | Sequence[float], parameters: Sequence[nn.Parameter]) -> list[float]:
    decays = [weight_decay] * len(parameters) if isinstance(weight_decay, (int, float)) else list(weight_decay)
    if len(decays) != len(parameters):
        raise ValueError(f"{len(decays)} weight decays for {len(parameters)} trainable parameters")
    return decays


@dataclass(frozen=True)
class PiecewiseVector:
    """A vector read where its pieces are kept (a model's parameters, their gradients), a
    block at a time, never copied whole: the tracker's vectors that the model already holds.

    ``piece(i, first, last)`` gives entries ``first:last`` of piece ``i`` as a 1-D tensor,
    computed as the matching flat vector's entries are (elementwise, so the same bits).
    """

    sizes: tuple[int, ...]
    piece: Callable[[int, int, int], torch.Tensor]

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    @property
    def shape(self) -> torch.Size:
        return torch.Size([self.numel])

    def block(self, first: int, size: int) -> torch.Tensor:
        """Entries ``first : first + size`` as one new tensor (the pieces they span, joined)."""
        parts, offset, last = [], 0, min(first + size, self.numel)
        for index, piece_size in enumerate(self.sizes):
            low, high = max(first, offset), min(last, offset + piece_size)
            if low < high:
                parts.append(self.piece(index, low - offset, high - offset))
            offset += piece_size
        return torch.cat(parts) if len(parts) != 1 else parts[0].clone()

    def whole(self) -> torch.Tensor:
        """The vector as one tensor: a copy, for vectors of one widening block only."""
        return self.block(0, self.numel)


Vector = torch.Tensor | PiecewiseVector


def parameters_in_place(model: nn.Module) -> PiecewiseVector:
    """``flat_parameters(model)``'s vector, read from the parameters themselves."""
    parameters = trainable_parameters(model)
    return PiecewiseVector(
        tuple(p.numel() for p in parameters),
        lambda index, first, last: parameters[index].detach().reshape(-1)[first:last],
    )


def gradient_in_place(
    model: nn.Module, weight_decay: float | Sequence[float] = 0.0, inverse_scale: float | None = None
) -> PiecewiseVector:
    """``flat_gradient(model, weight_decay, inverse_scale)``'s vector, read from the gradients themselves."""
    parameters = trainable_parameters(model)
    decays = _decays(weight_decay, parameters)
    # Sparse gradients made dense once each, not at every block read from them.
    densified: dict[int, torch.Tensor] = {}

    def piece(index: int, first: int, last: int) -> torch.Tensor:
        parameter = parameters[index]
        if parameter.grad is None:
            # No decay either: torch's optimizers skip the parameter (flat_gradient's zeros).
            return torch.zeros(last - first, dtype=parameter.dtype, device=parameter.device)
        whole = parameter.grad.detach()
        if whole.layout != torch.strided:
            whole = densified.setdefault(index, _dense(whole))
        gradient = whole.reshape(-1)[first:last]
        if inverse_scale is not None:
            gradient = gradient * inverse_scale
        decay = decays[index]
        # grad + (decay · θ): flat_gradient's two roundings, elementwise.
        return gradient + decay * parameter.detach().reshape(-1)[first:last] if decay else gradient

    return PiecewiseVector(tuple(p.numel() for p in parameters), piece)


def update_in_place(model: nn.Module, start: Vector) -> PiecewiseVector:
    """θ_{t+1} − θ_t with θ_{t+1} read from the parameters themselves: ``flat_parameters(model) − start``."""
    parameters = trainable_parameters(model)
    offsets = [0]
    for parameter in parameters:
        offsets.append(offsets[-1] + parameter.numel())
    if offsets[-1] != vector_numel(start):
        raise ValueError(f"θ_t has {vector_numel(start)} entries, the model {offsets[-1]} parameters")

    def piece(index: int, first: int, last: int) -> torch.Tensor:
        offset = offsets[index]
        return parameters[index].detach().reshape(-1)[first:last] - vector_block(start, offset + first, last - first)

    return PiecewiseVector(tuple(p.numel() for p in parameters), piece)


def update_between(start: Vector, end: Vector) -> PiecewiseVector:
    """θ_{t+1} − θ_t of two vectors read a block at a time, as −θ_t + θ_{t+1} (the tracker's
    ``start.neg_().add_(end)``, elementwise: the same bits)."""
    _check_same_shape(start, end)

    def piece(index: int, first: int, last: int) -> torch.Tensor:
        return vector_block(start, first, last - first).neg().add_(vector_block(end, first, last - first))

    return PiecewiseVector((vector_numel(start),), piece)


def vector_numel(vector: Vector) -> int:
    return vector.numel if isinstance(vector, PiecewiseVector) else vector.numel()


def vector_block(vector: Vector, first: int, size: int) -> torch.Tensor:
    """Entries ``first : first + size`` (fewer at the end): a view of a tensor, a copy of a piecewise vector."""
    if isinstance(vector, PiecewiseVector):
        return vector.block(first, size)
    return vector.detach().reshape(-1)[first : first + size]


def equals_parameters(vector: Vector, model: nn.Module) -> bool:
    """Whether ``vector`` holds the model's trainable parameters bit for bit, compared a
    widening block at a time (no flat copy of either)."""
    first = 0
    for parameter in trainable_parameters(model):
        flat = parameter.detach().reshape(-1)
        for low in range(0, flat.numel(), _WIDENING_BLOCK):
            piece = flat[low : low + _WIDENING_BLOCK]
            if not torch.equal(piece, vector_block(vector, first + low, piece.numel())):
                return False
        first += flat.numel()
    return first == vector_numel(vector)


def all_finite(vector: Vector) -> bool:
    """Whether every entry is finite: one answer read back from the device, whatever the pieces."""
    if isinstance(vector, torch.Tensor):
        return bool(torch.isfinite(vector).all())
    pieces = [torch.isfinite(vector.piece(index, 0, size)).all() for index, size in enumerate(vector.sizes)]
    return bool(torch.stack(pieces).all())


def _check_same_shape(a: Vector, b: Vector) -> None:
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


def _flat(vector: Vector) -> Vector:
    """A tensor as one flat view; a piecewise vector of one widening block as one (small) copy,
    a longer one as it is, to be read block by block."""
    if isinstance(vector, PiecewiseVector):
        return vector.whole() if vector.numel <= _WIDENING_BLOCK else vector
    return vector.detach().reshape(-1)


def _block(vector: Vector, first: int) -> torch.Tensor:
    """Entries ``first : first + _WIDENING_BLOCK`` (a view of a tensor, a copy of a piecewise vector)."""
    if isinstance(vector, PiecewiseVector):
        return vector.block(first, _WIDENING_BLOCK)
    return vector[first : first + _WIDENING_BLOCK]


def _largest_of(vector: Vector) -> float:
    """``_largest`` of a long vector: of a tensor at once, of a piecewise vector over its blocks
    (the same value: a maximum does not depend on the order it is taken in)."""
    if isinstance(vector, torch.Tensor):
        return _largest(vector)
    return max((_largest(_block(vector, first)) for first in _blocks(vector.numel)), key=_nan_first)


def cosine(a: Vector, b: Vector) -> float:
    """cos∠(a, b) in float64; 0.0 when either vector is zero (the angle is undefined)."""
    _check_same_shape(a, b)
    a, b = _flat(a), _flat(b)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.numel() <= _WIDENING_BLOCK:
        (a_unit, _), (b_unit, _) = _scaled(a), _scaled(b)
        norm_product = float(torch.linalg.vector_norm(a_unit) * torch.linalg.vector_norm(b_unit))
        if norm_product < COSINE_NORM_PRODUCT_FLOOR:
            return 0.0
        return float(torch.dot(a_unit, b_unit)) / norm_product
    a_scale, b_scale = _scale(_largest_of(a)), _scale(_largest_of(b))
    dots, a_squares, b_squares = [], [], []
    for first in _blocks(vector_numel(a)):
        a_unit = _block(a, first).to(torch.float64, copy=True).div_(a_scale)
        b_unit = _block(b, first).to(torch.float64, copy=True).div_(b_scale)
        dots.append(float(torch.dot(a_unit, b_unit)))
        a_squares.append(float(torch.dot(a_unit, a_unit)))
        b_squares.append(float(torch.dot(b_unit, b_unit)))
    norm_product = math.sqrt(_total(a_squares)) * math.sqrt(_total(b_squares))
    if not norm_product >= COSINE_NORM_PRODUCT_FLOOR:  # NaN propagates below, as in one block
        return math.nan if math.isnan(norm_product) else 0.0
    return _total(dots) / norm_product


def norm(a: Vector) -> float:
    """‖a‖₂ in float64, without overflow for entries near float64's square root."""
    a = _flat(a)
    if isinstance(a, torch.Tensor) and a.numel() <= _WIDENING_BLOCK:
        scaled, largest = _scaled(a)
        return largest * float(torch.linalg.vector_norm(scaled))
    scale = _scale(_largest_of(a))
    squares = [
        _block_squares(_block(a, first).to(torch.float64, copy=True).div_(scale)) for first in _blocks(vector_numel(a))
    ]
    return scale * math.sqrt(_total(squares))


def _block_squares(unit: torch.Tensor) -> float:
    return float(torch.dot(unit, unit))


def distance(a: Vector, b: Vector) -> float:
    """‖a − b‖₂ in float64."""
    _check_same_shape(a, b)
    a, b = _flat(a), _flat(b)

    def difference(first: int) -> torch.Tensor:
        # One float64 copy of a's block, b's subtracted in place: the values of a.double() −
        # b.double(). (torch widens b into a temporary of the block's size for the mixed-dtype
        # subtraction: elementwise, the same bits.)
        return _block(a, first).to(torch.float64, copy=True).sub_(_block(b, first))

    if vector_numel(a) <= _WIDENING_BLOCK:
        scaled, largest = _scaled(difference(0), owned=True)
        return largest * float(torch.linalg.vector_norm(scaled))
    # Two passes, the difference formed twice block by block: its largest entry, then its squares.
    scale = _scale(max((_largest(difference(first)) for first in _blocks(vector_numel(a))), key=_nan_first))
    squares = [_block_squares(difference(first).div_(scale)) for first in _blocks(vector_numel(a))]
    return scale * math.sqrt(_total(squares))


def _total(values: list[float]) -> float:
    """The sum of the blocks' parts, correctly rounded (``math.fsum``) where they are finite;
    a plain sum otherwise, which propagates inf and NaN as torch's sums do (fsum refuses inf − inf)."""
    return math.fsum(values) if all(math.isfinite(value) for value in values) else sum(values)


def _nan_first(value: float) -> float:
    """Order for ``max`` that ranks NaN above everything, as torch's reductions propagate it."""
    return math.inf if math.isnan(value) else value
