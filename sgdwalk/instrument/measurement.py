"""The loss on a fixed measurement set at parameter vectors that the model does not hold.

Evaluation goes through ``torch.func.functional_call`` with parameters built from flat
vectors, so the model's own parameters, gradients and running statistics are never
touched. All points of a segment are evaluated chunk by chunk in one pass over the set:
each chunk is read once and memory is bounded by the chunk size, not the set size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn
from torch.func import functional_call

from sgdwalk.instrument.batchnorm import BatchNormMode, batchnorm_layers, check_batchnorm_mode, measuring

#: (outputs, targets) -> one loss per sample, shape [n]. Per-sample losses make the mean over
#: the whole set exact however it is chunked.
PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def per_sample_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def outputs_are_losses(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """For models whose forward already returns per-sample losses (the landscapes)."""
    del targets
    return outputs


@dataclass(frozen=True)
class MeasurementSet:
    """A fixed set of samples on which every loss of the walk is measured.

    The paper measures on the whole training set; any fixed subset works, as long as it
    stays the same for the whole run (no augmentation, no reshuffling).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    loss_fn: PerSampleLoss = per_sample_cross_entropy
    chunk_size: int = 1024
    size: int = field(init=False)

    def __post_init__(self) -> None:
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError(
                f"inputs ({self.inputs.shape[0]}) and targets ({self.targets.shape[0]}) differ in length"
            )
        if self.inputs.shape[0] == 0:
            raise ValueError("the measurement set is empty")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        object.__setattr__(self, "size", int(self.inputs.shape[0]))

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.size, self.chunk_size):
            yield self.inputs[start : start + self.chunk_size], self.targets[start : start + self.chunk_size]


@dataclass(frozen=True)
class ParameterLayout:
    """Names and shapes of a model's trainable parameters, to go between vectors and dicts."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParameterLayout:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(f"{type(model).__name__} has no trainable parameters: there is no walk to measure")
        return cls(tuple(name for name, _ in named), tuple(p.shape for _, p in named))

    @property
    def numel(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.shapes)

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        if vector.ndim != 1 or vector.numel() != self.numel:
            raise ValueError(f"expected a vector of {self.numel} parameters, got shape {tuple(vector.shape)}")
        pieces = torch.split(vector, [int(np.prod(shape)) for shape in self.shapes])
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes)}


def _check_per_sample(losses: torch.Tensor, num_samples: int) -> None:
    # A loss of the wrong length (a truncated or broadcast vector) would silently move the mean.
    if losses.ndim != 1 or losses.shape[0] != num_samples:
        raise ValueError(
            f"the loss function must return one loss per sample (shape [{num_samples}]), got {tuple(losses.shape)}"
        )


def _fresh_batchnorm_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """Zeroed running statistics for every batch-norm buffer, to be re-estimated at a point."""
    fresh: dict[str, torch.Tensor] = {}
    batchnorm_names = {id(layer) for layer in batchnorm_layers(model)}
    for module_name, module in model.named_modules():
        if id(module) not in batchnorm_names:
            continue
        prefix = f"{module_name}." if module_name else ""
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer_name == "running_var":
                fresh[prefix + buffer_name] = torch.ones_like(buffer)
            else:
                fresh[prefix + buffer_name] = torch.zeros_like(buffer)
    return fresh


def _recompute_statistics(
    model: nn.Module, parameter_dicts: Sequence[dict[str, torch.Tensor]], measurement: MeasurementSet
) -> list[dict[str, torch.Tensor]]:
    """Batch-norm statistics at each point, averaged over the measurement set's chunks."""
    statistics = [_fresh_batchnorm_statistics(model) for _ in parameter_dicts]
    layers = batchnorm_layers(model)
    saved = [(layer, layer.training, layer.track_running_stats, layer.momentum) for layer in layers]
    try:
        for layer in layers:
            # momentum=None makes batch norm keep a cumulative average of the chunk statistics.
            layer.train()
            layer.track_running_stats = True
            layer.momentum = None
        for inputs, _ in measurement.chunks():
            for parameters, buffers in zip(parameter_dicts, statistics):
                functional_call(model, {**parameters, **buffers}, (inputs,))
    finally:
        for layer, training, tracking, momentum in saved:
            layer.training, layer.track_running_stats, layer.momentum = training, tracking, momentum
    return statistics


@torch.no_grad()
def recomputed_batchnorm_statistics(
    model: nn.Module, point: torch.Tensor, measurement: MeasurementSet
) -> dict[str, torch.Tensor]:
    """The batch-norm buffers ``recompute`` mode uses at ``point`` (empty without batch norm)."""
    if not batchnorm_layers(model):
        return {}
    parameters = ParameterLayout.of(model).unflatten(point.detach())
    with measuring(model, "eval"):
        return _recompute_statistics(model, [parameters], measurement)[0]


@torch.no_grad()
def losses_at_points(
    model: nn.Module,
    points: Sequence[torch.Tensor],
    measurement: MeasurementSet,
    bn_mode: BatchNormMode = "train",
) -> NDArray[np.float64]:
    """Mean loss over the measurement set at each flat parameter vector in ``points``.

    Every chunk is read once and evaluated at all points before the next chunk. The sums
    are accumulated in float64 so that chunking does not move the mean.
    """
    check_batchnorm_mode(bn_mode)
    if len(points) == 0:
        return np.zeros(0, dtype=np.float64)
    layout = ParameterLayout.of(model)
    parameter_dicts = [layout.unflatten(point) for point in points]
    totals = torch.zeros(len(points), dtype=torch.float64)
    with measuring(model, "eval" if bn_mode == "recompute" else bn_mode):
        buffer_dicts: list[dict[str, torch.Tensor]] = [{} for _ in points]
        if bn_mode == "recompute" and batchnorm_layers(model):
            buffer_dicts = _recompute_statistics(model, parameter_dicts, measurement)
        for inputs, targets in measurement.chunks():
            for index, (parameters, buffers) in enumerate(zip(parameter_dicts, buffer_dicts)):
                outputs = functional_call(model, {**parameters, **buffers}, (inputs,))
                losses = measurement.loss_fn(outputs, targets)
                _check_per_sample(losses, int(targets.shape[0]))
                totals[index] += losses.double().sum().cpu()
    return (totals / measurement.size).numpy()


def interpolate(start: torch.Tensor, end: torch.Tensor, alpha: float) -> torch.Tensor:
    """θ(α) = θ_t + α (θ_{t+1} − θ_t); α = 0 returns θ_t itself, exactly."""
    if start.shape != end.shape:
        raise ValueError(f"segment ends differ in shape: {tuple(start.shape)} vs {tuple(end.shape)}")
    if alpha == 0.0:
        return start
    return start + alpha * (end - start)


def affine_input_layer(model: nn.Module) -> nn.Module | None:
    """The model's opt-in input layer whose output is affine in its parameters, if any.

    A model opts in with a method ``affine_input_layer()`` returning a submodule that reads
    the model's input after parameter-free preprocessing only (e.g. ``Flatten``) and whose
    output is affine in its own parameters (``Linear``, ``Conv2d``). Its output along a
    segment is then (1 − α)·z(θ_t) + α·z(θ_{t+1}) exactly, so it is evaluated twice per
    chunk instead of once per α.
    """
    method = getattr(model, "affine_input_layer", None)
    if not callable(method):
        return None
    layer = method()
    if not isinstance(layer, nn.Module) or not any(p.requires_grad for p in layer.parameters(recurse=False)):
        raise TypeError(f"{type(model).__name__}.affine_input_layer() must return a submodule with parameters")
    return layer


def _submodule_name(model: nn.Module, layer: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is layer:
            return name
    raise ValueError("affine_input_layer() returned a module that is not part of the model")


@contextmanager
def _forward_replaced(layer: nn.Module, output: Callable[[], torch.Tensor]) -> Iterator[None]:
    """Make ``layer(...)`` return ``output()`` without computing anything (hooks still run)."""
    layer.forward = lambda *args, **kwargs: output()  # type: ignore[method-assign]
    try:
        yield
    finally:
        del layer.forward


@torch.no_grad()
def _segment_losses_affine_input(
    model: nn.Module,
    layer: nn.Module,
    start: torch.Tensor,
    end: torch.Tensor,
    alphas: Sequence[float],
    measurement: MeasurementSet,
    bn_mode: BatchNormMode,
) -> NDArray[np.float64]:
    """``segment_losses`` evaluating the affine input layer at the two ends only."""
    layout = ParameterLayout.of(model)
    prefix = _submodule_name(model, layer) + "."
    start_parameters, end_parameters = layout.unflatten(start), layout.unflatten(end)
    end_layer_parameters = {
        name[len(prefix) :]: value for name, value in end_parameters.items() if name.startswith(prefix)
    }
    point_parameters = [layout.unflatten(interpolate(start, end, float(alpha))) for alpha in alphas]
    totals = torch.zeros(len(alphas), dtype=torch.float64)
    with measuring(model, bn_mode):
        for inputs, targets in measurement.chunks():
            captured: dict[str, torch.Tensor] = {}

            def capture(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
                captured["input"], captured["start"] = args[0], output

            handle = layer.register_forward_hook(capture)
            try:
                outputs = functional_call(model, start_parameters, (inputs,))
            finally:
                handle.remove()
            layer_end = functional_call(layer, end_layer_parameters, (captured["input"],))
            for index, alpha in enumerate(alphas):
                if alpha != 0.0:
                    # lerp returns the end itself at weight 1, so α = 1 is exactly z(θ_{t+1}).
                    mixed = torch.lerp(captured["start"], layer_end, float(alpha))
                    with _forward_replaced(layer, lambda: mixed):
                        outputs = functional_call(model, point_parameters[index], (inputs,))
                losses = measurement.loss_fn(outputs, targets)
                _check_per_sample(losses, int(targets.shape[0]))
                totals[index] += losses.double().sum().cpu()
    return (totals / measurement.size).numpy()


def segment_losses(
    model: nn.Module,
    start: torch.Tensor,
    end: torch.Tensor,
    alphas: Sequence[float] | NDArray[np.float64],
    measurement: MeasurementSet,
    bn_mode: BatchNormMode = "train",
    *,
    include_end: bool = False,
    exploit_affine_input: bool = True,
) -> NDArray[np.float64]:
    """L(θ_t + α (θ_{t+1} − θ_t)) on the measurement set for each α, in one pass.

    ``include_end`` appends α = 1, evaluated at ``end`` itself (not at start + 1·(end − start)).
    With ``exploit_affine_input`` and a model that declares an affine input layer (see
    ``affine_input_layer``), that layer runs twice per chunk instead of once per α; the
    result differs from plain evaluation only by float rounding. Batch-norm mode
    ``recompute`` always takes the plain path.
    """
    check_batchnorm_mode(bn_mode)
    if start.shape != end.shape:
        raise ValueError(f"segment ends differ in shape: {tuple(start.shape)} vs {tuple(end.shape)}")
    grid = [float(alpha) for alpha in alphas]
    if not grid or grid[0] != 0.0:
        raise ValueError("a segment's α grid must start at 0 (the iterate θ_t)")
    everything = [*grid, 1.0] if include_end else grid
    layer = affine_input_layer(model) if exploit_affine_input and bn_mode != "recompute" else None
    if layer is not None:
        return _segment_losses_affine_input(model, layer, start, end, everything, measurement, bn_mode)
    points = [interpolate(start, end, alpha) for alpha in grid]
    if include_end:
        points.append(end)
    return losses_at_points(model, points, measurement, bn_mode)
