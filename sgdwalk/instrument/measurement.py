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
            raise ValueError(f"inputs ({self.inputs.shape[0]}) and targets ({self.targets.shape[0]}) differ in length")
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
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)}


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
            for parameters, buffers in zip(parameter_dicts, statistics, strict=True):
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
            for index, (parameters, buffers) in enumerate(zip(parameter_dicts, buffer_dicts, strict=True)):
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
    layer.forward = lambda *args, **kwargs: output()
    try:
        yield
    finally:
        del layer.forward


class _InputCaptured(Exception):
    """Raised by a pre-hook to stop a forward pass once the input layer's input is known."""


def _input_of(
    model: nn.Module, layer: nn.Module, parameters: dict[str, torch.Tensor], inputs: torch.Tensor
) -> torch.Tensor:
    """What ``layer`` receives when the model reads ``inputs``: only the parameter-free
    preprocessing in front of it runs (the pass is stopped at the layer)."""
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0])
        raise _InputCaptured

    handle = layer.register_forward_pre_hook(capture)
    try:
        functional_call(model, parameters, (inputs,))
    except _InputCaptured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError("the model's forward never reached its affine_input_layer()")
    return captured[0]


def _prefers_channels_last(model: nn.Module, point: torch.Tensor) -> bool:
    """Whether convolutions at ``point`` run faster with activations in channels-last order.

    On the CPU, oneDNN's float32 convolutions, max pooling and batch norm are about 2-3x
    faster on NHWC tensors than on NCHW ones (measured on the conv net and VGG-11 of
    ``benchmarks/test_segment_speed.py``). Only the memory layout changes: the values differ
    from the contiguous evaluation by float rounding (a different summation order).
    """
    has_convolutions = any(isinstance(module, nn.Conv2d) for module in model.modules())
    return has_convolutions and point.dtype == torch.float32 and point.device.type == "cpu"


def _channels_last(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        name: value.contiguous(memory_format=torch.channels_last) if value.ndim == 4 else value
        for name, value in parameters.items()
    }


class SegmentPoints:
    """Per-sample losses at chosen points θ_t + α (θ_{t+1} − θ_t) of one segment, chunk by chunk.

    α = 0 is θ_t itself and α = 1 is θ_{t+1} itself (not start + 1·(end − start)). Use it
    inside ``measuring(model, ...)`` (``evaluation_mode``), which ``segment_moments`` does.

    With ``exploit_affine_input`` and a model that declares an affine input layer (see
    ``affine_input_layer``), that layer runs twice per chunk (at θ_t and θ_{t+1}) instead of
    once per α, and its parameters are never interpolated; the result differs from plain
    evaluation only by float rounding. Batch-norm mode ``recompute`` re-estimates statistics
    at every point over the whole set first, and always takes the plain path.

    Where it pays (``_prefers_channels_last``: float32 conv nets on the CPU) the points are
    evaluated with activations and conv weights in channels-last order, again equal to plain
    evaluation up to float rounding; every point of every segment takes the same path, so
    α = 1 of one segment and α = 0 of the next are still bitwise equal.
    """

    def __init__(
        self,
        model: nn.Module,
        start: torch.Tensor,
        end: torch.Tensor,
        alphas: Sequence[float],
        measurement: MeasurementSet,
        bn_mode: BatchNormMode = "train",
        *,
        exploit_affine_input: bool = True,
    ) -> None:
        check_batchnorm_mode(bn_mode)
        if start.shape != end.shape:
            raise ValueError(f"segment ends differ in shape: {tuple(start.shape)} vs {tuple(end.shape)}")
        self.model = model
        self.alphas = tuple(float(alpha) for alpha in alphas)
        self.loss_fn = measurement.loss_fn
        layout = ParameterLayout.of(model)
        self._layer = affine_input_layer(model) if exploit_affine_input and bn_mode != "recompute" else None
        self._channels_last = _prefers_channels_last(model, start)
        starts, ends = layout.unflatten(start), layout.unflatten(end)
        # The affine input layer's own parameters are only needed at the two ends.
        prefix = _submodule_name(model, self._layer) + "." if self._layer is not None else None
        interpolated = [name for name in layout.names if prefix is None or not name.startswith(prefix)]
        self._parameters = [self._parameters_at(alpha, starts, ends, interpolated) for alpha in self.alphas]
        self._buffers: list[dict[str, torch.Tensor]] = [{} for _ in self.alphas]
        if bn_mode == "recompute" and batchnorm_layers(model):
            with measuring(model, "eval"):
                self._buffers = _recompute_statistics(model, self._parameters, measurement)
        if prefix is not None:
            self._start_parameters = self._laid_out(starts)
            self._layer_ends = tuple(
                self._laid_out({name[len(prefix) :]: value for name, value in ends.items() if name.startswith(prefix)})
                for ends in (starts, ends)
            )

    def _parameters_at(
        self, alpha: float, starts: dict[str, torch.Tensor], ends: dict[str, torch.Tensor], names: list[str]
    ) -> dict[str, torch.Tensor]:
        """θ(α) for the parameters in ``names``, elementwise the same arithmetic as ``interpolate``
        (so bitwise equal to slicing ``interpolate(start, end, alpha)``)."""
        if alpha == 0.0:
            chosen = {name: starts[name] for name in names}
        elif alpha == 1.0:
            chosen = {name: ends[name] for name in names}
        else:
            chosen = {name: starts[name] + alpha * (ends[name] - starts[name]) for name in names}
        return self._laid_out(chosen)

    def _laid_out(self, parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return _channels_last(parameters) if self._channels_last else parameters

    def losses(self, inputs: torch.Tensor, targets: torch.Tensor, *, skip_first: bool = False) -> torch.Tensor:
        """Per-sample losses [P, m] of one chunk of m samples at the P points.

        ``skip_first`` leaves out the first point (P − 1 rows): its losses are known already,
        as when θ_t's were measured as the previous segment's θ_{t+1}.
        """
        first = 1 if skip_first else 0
        if self._channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self._layer is not None:
            rows = self._losses_affine_input(inputs, targets, first)
        else:
            rows = []
            for parameters, buffers in zip(self._parameters[first:], self._buffers[first:], strict=True):
                outputs = functional_call(self.model, {**parameters, **buffers}, (inputs,))
                rows.append(self._checked(self.loss_fn(outputs, targets), targets))
        return torch.stack(rows)

    def _losses_affine_input(self, inputs: torch.Tensor, targets: torch.Tensor, first: int) -> list[torch.Tensor]:
        assert self._layer is not None
        layer_input = _input_of(self.model, self._layer, self._start_parameters, inputs)
        layer_start, layer_end = (functional_call(self._layer, ends, (layer_input,)) for ends in self._layer_ends)
        rows = []
        # One buffer for every α: a fresh activation-sized tensor per α costs more in page
        # faults than the lerp itself (conv nets, CPU).
        mixed = torch.empty_like(layer_start)
        for alpha, parameters in zip(self.alphas[first:], self._parameters[first:], strict=True):
            # lerp returns its ends exactly at weights 0 and 1, so α = 0 and 1 are exact too.
            torch.lerp(layer_start, layer_end, alpha, out=mixed)
            with _forward_replaced(self._layer, lambda: mixed):
                outputs = functional_call(self.model, parameters, (inputs,))
            rows.append(self._checked(self.loss_fn(outputs, targets), targets))
        return rows

    @staticmethod
    def _checked(losses: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _check_per_sample(losses, int(targets.shape[0]))
        return losses


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
    """L(θ_t + α (θ_{t+1} − θ_t)) on the whole measurement set for each α, in one pass.

    ``include_end`` appends α = 1, evaluated at ``end`` itself (not at start + 1·(end − start)).
    See ``SegmentPoints`` for ``exploit_affine_input`` and the batch-norm modes.
    """
    grid = [float(alpha) for alpha in alphas]
    if not grid or grid[0] != 0.0:
        raise ValueError("a segment's α grid must start at 0 (the iterate θ_t)")
    everything = [*grid, 1.0] if include_end else grid
    points = SegmentPoints(
        model, start, end, everything, measurement, bn_mode, exploit_affine_input=exploit_affine_input
    )
    totals = torch.zeros(len(everything), dtype=torch.float64)
    with measuring(model, "eval" if bn_mode == "recompute" else bn_mode):
        for inputs, targets in measurement.chunks():
            chunk = points.losses(inputs, targets)
            for index in range(len(everything)):
                totals[index] += chunk[index].double().sum().cpu()
    return (totals / measurement.size).numpy()
