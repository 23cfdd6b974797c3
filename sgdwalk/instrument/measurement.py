"""The loss on a fixed measurement set at parameter vectors that the model does not hold.

Evaluation goes through ``torch.func.functional_call`` with parameters built from flat
vectors, so the model's own parameters, gradients and running statistics are never
touched. All points of a segment are evaluated chunk by chunk in one pass over the set:
each chunk is read once and memory is bounded by the chunk size, not the set size; and one
point's parameters are built at a time, so it is not bounded by the number of points either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn
from torch.func import functional_call

from sgdwalk.instrument import offload
from sgdwalk.instrument.batchnorm import BatchNormMode, batchnorm_layers, check_batchnorm_mode, measuring
from sgdwalk.instrument.geometry import named_trainable_parameters
from sgdwalk.instrument.measurement_precision import (
    MeasurementPrecision,
    check_measurement_precision,
    measurement_arithmetic,
    per_sample_losses_in_float32,
)
from sgdwalk.instrument.offload import KeptVector

#: (outputs, targets) -> one loss per sample, shape [n]. Per-sample losses make the mean over
#: the whole set exact however it is chunked.
PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Some samples: a tensor, or a tuple, list or dict of them (nested as deep as wanted), every
#: tensor holding the samples along its first dimension, e.g. {"input_ids": [n, T], "labels": [n, T]}.
Batch = Any

#: The model evaluated at the parameters being measured; call it as the model itself is called.
ModelCall = Callable[..., Any]

#: (model_call, batch) -> one loss per sample of the batch, shape [n]: the user's forward and
#: loss in one function, so a model that takes dicts, several inputs or keyword arguments needs
#: no adapter (e.g. ``lambda model, batch: next_token_losses(model(batch["input_ids"]), batch["labels"])``).
BatchLoss = Callable[[ModelCall, Batch], torch.Tensor]


def per_sample_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def outputs_are_losses(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """For models whose forward already returns per-sample losses (the landscapes)."""
    del targets
    return outputs


# ------------------------------------------------------------------- batches of samples
def map_tensors(function: Callable[[torch.Tensor], torch.Tensor], batch: Batch) -> Batch:
    """``batch`` with ``function`` applied to every tensor, its structure kept."""
    if isinstance(batch, torch.Tensor):
        return function(batch)
    if isinstance(batch, Mapping):
        return {key: map_tensors(function, value) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(function, value) for value in batch)
    raise TypeError(
        f"a batch holds tensors in tuples, lists and dicts; found a {type(batch).__name__} "
        "(keep other values out of the measurement set, e.g. in the loss function)"
    )


def batch_tensors(batch: Batch) -> list[torch.Tensor]:
    """Every tensor of ``batch``, in its order."""
    found: list[torch.Tensor] = []

    def collect(tensor: torch.Tensor) -> torch.Tensor:
        found.append(tensor)
        return tensor

    map_tensors(collect, batch)
    return found


def batch_size(batch: Batch) -> int:
    """How many samples ``batch`` holds (the first dimension its tensors share)."""
    tensors = batch_tensors(batch)
    if not tensors:
        raise ValueError("a batch must hold at least one tensor")
    sizes = {int(tensor.shape[0]) if tensor.ndim else -1 for tensor in tensors}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError(
            f"every tensor of a batch must hold the samples along its first dimension; sizes {sorted(sizes)}"
        )
    return sizes.pop()


def concatenated(batches: Sequence[Batch]) -> Batch:
    """One batch holding the samples of ``batches`` in order (same structure in each)."""
    first = batches[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(batches))
    if isinstance(first, Mapping):
        keys = list(first)
        if any(not isinstance(batch, Mapping) or list(batch) != keys for batch in batches):
            raise ValueError(f"every batch must have the keys {keys}")
        return {key: concatenated([batch[key] for batch in batches]) for key in keys}
    if isinstance(first, (tuple, list)):
        if any(not isinstance(batch, type(first)) or len(batch) != len(first) for batch in batches):
            raise ValueError(f"every batch must be a {type(first).__name__} of {len(first)} parts")
        return type(first)(concatenated([batch[i] for batch in batches]) for i in range(len(first)))
    raise TypeError(f"a batch holds tensors in tuples, lists and dicts; found a {type(first).__name__}")


class _OutputsAndTargets:
    """The tensor form's ``BatchLoss``: the model reads ``inputs``, ``loss_fn`` compares with ``targets``."""

    def __init__(self, loss_fn: PerSampleLoss) -> None:
        self.loss_fn = loss_fn

    def __call__(self, model: ModelCall, batch: Batch) -> torch.Tensor:
        inputs, targets = batch
        outputs = model(inputs)
        if self.loss_fn is per_sample_cross_entropy and not isinstance(outputs, torch.Tensor):
            # A language model's output object (transformers' ModelOutput), a tuple, a dict.
            raise TypeError(
                f"the model returned a {type(outputs).__name__}, not a tensor of logits, so the default "
                "cross-entropy cannot read it: measure it with MeasurementSet.from_batches(batches, loss), "
                "whose loss(model_call, batch) runs the model on a batch and returns one loss per sample"
            )
        return self.loss_fn(outputs, targets)


class MeasurementSet:
    """A fixed set of samples on which every loss of the walk is measured.

    The paper measures on the whole training set; any fixed subset works, as long as it
    stays the same for the whole run (no augmentation, no reshuffling).

    Two ways to build one:

    - ``MeasurementSet(inputs, targets, loss_fn, chunk_size)``: a model that reads one tensor,
      a loss ``(outputs, targets) -> [n]`` (cross-entropy by default);
    - ``MeasurementSet.from_batches(batches, loss, chunk_size)``: any batches (tuples, dicts,
      nested) and a ``BatchLoss`` ``(model_call, batch) -> [n]`` that runs the model itself.

    Either way the set is one batch of ``size`` samples that the instrument cuts by index
    (``part``, ``take``), so chunked evaluation, precision-targeted sampling, Hessian-vector
    products and sharding across processes work on any model alike; the only thing the
    instrument asks of a model is the per-sample loss. Why samples and not whole batches as
    the unit: every mean and standard error here is over samples taken as independent draws.

    What "a sample" is, is what the loss returns one value per. For a language model it is a
    sequence (the mean next-token loss of the sequence): tokens of one sequence are not
    independent draws, so per-token losses would make the standard errors too small, while
    sequences are drawn independently. The set's loss is then the mean over sequences of the
    per-sequence mean, which is the mean over tokens when all sequences count the same number
    of labelled tokens.
    """

    __slots__ = ("_loss_fn", "batch_loss", "chunk_size", "samples", "size")

    samples: Batch
    batch_loss: BatchLoss
    chunk_size: int
    size: int
    _loss_fn: PerSampleLoss | None

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: PerSampleLoss = per_sample_cross_entropy,
        chunk_size: int = 1024,
    ) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(f"inputs ({inputs.shape[0]}) and targets ({targets.shape[0]}) differ in length")
        self._set((inputs, targets), _OutputsAndTargets(loss_fn), chunk_size, loss_fn)

    @classmethod
    def from_batches(cls, batches: Batch | Iterable[Batch], loss: BatchLoss, chunk_size: int = 1024) -> MeasurementSet:
        """A set of the samples of ``batches``, concatenated in order, measured by
        ``loss(model_call, batch) -> [n]`` (see ``BatchLoss``).

        ``batches`` is a list (or any iterable) of batches, or one batch that is a dict or a
        tensor; a single tuple batch goes in a list (``[(inputs, targets)]``), since a tuple
        of batches would look the same.
        """
        if isinstance(batches, (torch.Tensor, Mapping)):
            samples = batches
        else:
            listed = list(batches)
            if not listed:
                raise ValueError("the measurement set is empty")
            samples = concatenated(listed)
        measurement = cls.__new__(cls)
        measurement._set(samples, loss, chunk_size, None)
        return measurement

    def _set(self, samples: Batch, loss: BatchLoss, chunk_size: int, loss_fn: PerSampleLoss | None) -> None:
        size = batch_size(samples)
        if size == 0:
            raise ValueError("the measurement set is empty")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        for name, value in (
            ("samples", samples),
            ("batch_loss", loss),
            ("chunk_size", chunk_size),
            ("size", size),
            ("_loss_fn", loss_fn),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a MeasurementSet is fixed for the whole run: {name} cannot be set")

    def __repr__(self) -> str:
        return f"MeasurementSet(size={self.size}, chunk_size={self.chunk_size})"

    # ---------------------------------------------------------------- the tensor form
    def _tensor_form(self, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self._loss_fn is None:
            raise AttributeError(f"{what} belongs to sets built from (inputs, targets); this one holds .samples")
        inputs, targets = self.samples
        return inputs, targets

    @property
    def inputs(self) -> torch.Tensor:
        return self._tensor_form("inputs")[0]

    @property
    def targets(self) -> torch.Tensor:
        return self._tensor_form("targets")[1]

    @property
    def loss_fn(self) -> PerSampleLoss:
        self._tensor_form("loss_fn")
        assert self._loss_fn is not None
        return self._loss_fn

    # ---------------------------------------------------------------- samples by index
    def part(self, start: int, stop: int) -> Batch:
        """Samples ``start`` to ``stop − 1`` (views, no copy)."""
        return map_tensors(lambda tensor: tensor[start:stop], self.samples)

    def take(self, indices: torch.Tensor) -> Batch:
        """The samples at ``indices``, in that order."""
        return map_tensors(lambda tensor: tensor[indices.to(tensor.device)], self.samples)

    def chunked(self, chunk_size: int) -> MeasurementSet:
        """The same samples and loss, read ``chunk_size`` at a time (no copy)."""
        if chunk_size == self.chunk_size:
            return self
        rechunked = MeasurementSet.__new__(MeasurementSet)
        rechunked._set(self.samples, self.batch_loss, chunk_size, self._loss_fn)
        return rechunked

    def chunks(self) -> Iterator[Batch]:
        """The set in order, ``chunk_size`` samples at a time (``(inputs, targets)`` for the tensor form)."""
        for start in range(0, self.size, self.chunk_size):
            yield self.part(start, start + self.chunk_size)

    def losses(self, model: ModelCall, batch: Batch) -> torch.Tensor:
        """Per-sample losses [n] of ``batch`` under ``model``, checked for their shape."""
        losses = self.batch_loss(model, batch)
        _check_per_sample(losses, batch_size(batch))
        return losses


def model_call(model: nn.Module, parameters_and_buffers: dict[str, torch.Tensor]) -> ModelCall:
    """``model`` as a function, evaluated at ``parameters_and_buffers`` (the model is not touched)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return functional_call(model, parameters_and_buffers, args, kwargs)

    return call


@dataclass(frozen=True)
class ParameterLayout:
    """Names and shapes of a model's trainable parameters, to go between vectors and dicts."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParameterLayout:
        named = named_trainable_parameters(model)
        return cls(tuple(name for name, _ in named), tuple(p.shape for _, p in named))

    @property
    def numel(self) -> int:
        return sum(int(np.prod(shape)) for shape in self.shapes)

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        if vector.ndim != 1 or vector.numel() != self.numel:
            raise ValueError(f"expected a vector of {self.numel} parameters, got shape {tuple(vector.shape)}")
        pieces = torch.split(vector, [int(np.prod(shape)) for shape in self.shapes])
        return {name: piece.view(shape) for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)}


def model_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's trainable parameters by name, detached, as they stand: a segment end read in
    place (``SegmentPoints``), with no copy of the parameters."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def _end_parameters(layout: ParameterLayout, end: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The segment's end by parameter name, from one vector or from tensors held apart."""
    if isinstance(end, torch.Tensor):
        return layout.unflatten(end)
    if tuple(end) != layout.names:
        raise ValueError(f"the end's parameters {tuple(end)} are not the model's {layout.names}")
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        if end[name].shape != shape:
            raise ValueError(f"segment ends differ in shape at {name}: {tuple(shape)} vs {tuple(end[name].shape)}")
    return dict(end)


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
    model: nn.Module,
    num_points: int,
    parameters_at: Callable[[int], dict[str, torch.Tensor]],
    measurement: MeasurementSet,
) -> list[dict[str, torch.Tensor]]:
    """Batch-norm statistics at each of ``num_points`` points, averaged over the measurement
    set's chunks; ``parameters_at(i)`` gives point i's parameters (built when asked, so the
    points need not all be held at once)."""
    statistics = [_fresh_batchnorm_statistics(model) for _ in range(num_points)]
    layers = batchnorm_layers(model)
    saved = [(layer, layer.training, layer.track_running_stats, layer.momentum) for layer in layers]
    try:
        for layer in layers:
            # momentum=None makes batch norm keep a cumulative average of the chunk statistics.
            layer.train()
            layer.track_running_stats = True
            layer.momentum = None
        for batch in measurement.chunks():
            for index, buffers in enumerate(statistics):
                # The loss is computed too (the forward is the user's, inside it) and dropped.
                measurement.losses(model_call(model, {**parameters_at(index), **buffers}), batch)
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
        return _recompute_statistics(model, 1, lambda _: parameters, measurement)[0]


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
    sums = _ChunkSums(len(points))
    with measuring(model, "eval" if bn_mode == "recompute" else bn_mode):
        buffer_dicts: list[dict[str, torch.Tensor]] = [{} for _ in points]
        if bn_mode == "recompute" and batchnorm_layers(model):
            buffer_dicts = _recompute_statistics(model, len(points), parameter_dicts.__getitem__, measurement)
        for batch in measurement.chunks():
            sums.add(
                [
                    measurement.losses(model_call(model, {**parameters, **buffers}), batch)
                    for parameters, buffers in zip(parameter_dicts, buffer_dicts, strict=True)
                ]
            )
    return sums.means(measurement.size)


class _ChunkSums:
    """Per-point float64 sums of per-sample losses, chunk after chunk, kept on the losses'
    device and copied to the host once at the end (not once per point per chunk: on a GPU
    each copy is a synchronisation).

    Each chunk's row is summed on its own and added in float64, as a sum on the host would
    be: the means are bitwise those of copying every row's sum to the host.
    """

    def __init__(self, num_points: int) -> None:
        self.num_points = num_points
        self._totals: torch.Tensor | None = None

    def add(self, rows: Sequence[torch.Tensor]) -> None:
        sums = torch.stack([row.double().sum() for row in rows])
        if self._totals is None:
            self._totals = torch.zeros(self.num_points, dtype=torch.float64, device=sums.device)
        self._totals += sums

    def means(self, count: int) -> NDArray[np.float64]:
        assert self._totals is not None, "no chunk was added"
        return (self._totals.cpu() / count).numpy()


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
    measurement: MeasurementSet,
    model: nn.Module,
    layer: nn.Module,
    parameters: dict[str, torch.Tensor],
    batch: Batch,
) -> torch.Tensor:
    """What ``layer`` receives when the model reads ``batch``: only the parameter-free
    preprocessing in front of it runs (the pass is stopped at the layer)."""
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        captured.append(args[0])
        raise _InputCaptured

    handle = layer.register_forward_pre_hook(capture)
    try:
        measurement.losses(model_call(model, parameters), batch)
    except _InputCaptured:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError("the model's forward never reached its affine_input_layer()")
    return captured[0]


def _prefers_channels_last(model: nn.Module, point: torch.Tensor | KeptVector) -> bool:
    """Whether convolutions at ``point`` run faster with activations in channels-last order.

    On the CPU, oneDNN's float32 convolutions, max pooling and batch norm are about 2-3x
    faster on NHWC tensors than on NCHW ones (measured on the conv net and VGG-11 of
    ``benchmarks/test_segment_speed.py``). Only the memory layout changes: the values differ
    from the contiguous evaluation by float rounding (a different summation order).
    """
    has_convolutions = any(isinstance(module, nn.Conv2d) for module in model.modules())
    return has_convolutions and point.dtype == torch.float32 and point.device.type == "cpu"


def _kept_parameters(layout: ParameterLayout, kept: KeptVector, prefix: str) -> dict[str, torch.Tensor]:
    """The parameters named ``prefix…`` read back from a kept vector (one copy each)."""
    parameters, offset = {}, 0
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        size = int(np.prod(shape))
        if name.startswith(prefix):
            parameters[name] = kept.block(offset, size).view(shape)
        offset += size
    return parameters


def _channels_last(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        name: value.contiguous(memory_format=torch.channels_last) if value.ndim == 4 else value
        for name, value in parameters.items()
    }


class _OnePoint:
    """The parameters of one point θ(α) of a segment at a time, built into buffers made once.

    Holding every point's parameters at once costs a copy of the model per α (on a ResNet-18
    at K = 10, twenty copies with the channels-last ones); one point at a time costs one copy,
    whatever K. Building a point again for each chunk is an axpy of the parameters, cheap
    next to the chunk's forward pass. The arithmetic is ``interpolate``'s, elementwise, so a
    point is bitwise the same whenever it is built, and bitwise ``interpolate``'s vector.

    α = 0 and α = 1 are the ends themselves (views of ``start`` and ``end``, no copy), except
    conv weights evaluated in channels-last order, which are copied into their buffer.

    A start kept away from the model (``offload.KeptVector``: the tracker's ``offload``) is
    read back a transfer block at a time (a conv weight evaluated channels-last: that weight at
    a time) and never held whole; every point, α = 0 too, is then built into the buffers, by
    the same elementwise operations, so the bits are those of a start held whole.
    """

    def __init__(
        self,
        layout: ParameterLayout,
        start: torch.Tensor | KeptVector,
        end: torch.Tensor | Mapping[str, torch.Tensor],
        names: Sequence[str],
        *,
        channels_last: bool,
        interior: bool,
    ) -> None:
        self._kept = start if isinstance(start, KeptVector) else None
        # A kept start's parameters as the views of a flat vector would be laid out, on the meta
        # device (shapes and strides only): what decides which conv weights are reordered.
        self._starts = (
            layout.unflatten(start)
            if isinstance(start, torch.Tensor)
            else {
                name: torch.empty(shape, device="meta") for name, shape in zip(layout.names, layout.shapes, strict=True)
            }
        )
        self._ends = _end_parameters(layout, end)
        # End tensors held apart (the model's own) share no flat vector with θ_t: each is a run of its own.
        flat_end = end if isinstance(end, torch.Tensor) else None
        self._names = tuple(names)
        self._interior = interior
        # An end held apart (the model's own tensors) is evaluated as a copy in the buffers, laid
        # out as θ_t's views are: a forward that writes to its parameters in place (an embedding's
        # max_norm) must not move the model, and tensors in another memory layout (channels-last
        # on a GPU) would be evaluated by other kernels, with other roundings, than θ_t's.
        self._end_copied = flat_end is None
        buffered = interior or self._end_copied or self._kept is not None
        chosen = set(names)
        reordered = [
            name
            for name in self._names
            if channels_last
            and self._starts[name].ndim == 4
            and not self._starts[name].is_contiguous(memory_format=torch.channels_last)
        ]
        # Every buffer is a view of one allocation (the chosen parameters, in the layout's order):
        # one block of the parameters' size, which the allocator returns whole when the segment
        # is done, where many parameter-sized ones would stay behind in its heap.
        sizes = {name: int(np.prod(shape)) for name, shape in zip(layout.names, layout.shapes, strict=True)}
        in_storage = [name for name in layout.names if name in chosen and (buffered or name in reordered)]
        storage = torch.empty(sum(sizes[name] for name in in_storage), dtype=start.dtype, device=start.device)
        self._storage = storage
        self._storage_offsets: dict[str, int] = {}
        stored = 0
        for name in in_storage:
            self._storage_offsets[name] = stored
            stored += sizes[name]
        # What ``_channels_last`` would copy: 4-D tensors not already in channels-last order.
        self._reordered = {name: self._channels_last_view(name, self._starts[name].shape) for name in reordered}
        # (start part, end part, buffer): runs of parameters stored next to each other in the
        # flat vectors take one axpy each; a reordered conv weight takes its own.
        self._pieces: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        # A kept start's part of each piece, (first, last) in the flat vector.
        self._kept_ranges: list[tuple[int, int]] = []
        self._between: dict[str, torch.Tensor] = {}
        if not buffered:
            return  # only the ends are asked for, both views of vectors: no buffer for other points
        run: list[tuple[str, int, int]] = []  # (name, offset, size) of the run being gathered
        offset = 0
        for name, shape in zip(layout.names, layout.shapes, strict=True):
            size = int(np.prod(shape))
            if name in chosen and name not in self._reordered:
                run.append((name, offset, size))
                if flat_end is None:
                    self._close_run(run, start, flat_end)
                    run = []
            else:
                self._close_run(run, start, flat_end)
                run = []
                if name in self._reordered:
                    buffer = self._reordered[name]
                    self._pieces.append((self._starts[name], self._ends[name], buffer))
                    self._kept_ranges.append((offset, offset + size))
                    self._between[name] = buffer
            offset += size
        self._close_run(run, start, flat_end)

    def _channels_last_view(self, name: str, shape: torch.Size) -> torch.Tensor:
        """Parameter ``name``'s buffer in the storage, laid out channels-last: [N, H, W, C] in
        memory, seen as [N, C, H, W] (what ``empty_like(..., memory_format=channels_last)`` makes)."""
        batch, channels, height, width = shape
        first = self._storage_offsets[name]
        block = self._storage[first : first + batch * channels * height * width]
        return block.view(batch, height, width, channels).permute(0, 3, 1, 2)

    def _close_run(
        self, run: list[tuple[str, int, int]], start: torch.Tensor | KeptVector, end: torch.Tensor | None
    ) -> None:
        """One piece for parameters stored next to each other in θ_t (and in the end vector, or
        a single parameter whose end is its own tensor, ``end`` None)."""
        if not run:
            return
        first, last = run[0][1], run[-1][1] + run[-1][2]
        stored = self._storage_offsets[run[0][0]]
        buffer = self._storage[stored : stored + last - first]
        end_part = end[first:last] if end is not None else self._ends[run[0][0]].reshape(-1)
        self._pieces.append((start[first:last] if isinstance(start, torch.Tensor) else buffer, end_part, buffer))
        self._kept_ranges.append((first, last))
        for name, offset, size in run:
            self._between[name] = buffer[offset - first : offset - first + size].view(self._starts[name].shape)

    def at(self, alpha: float) -> dict[str, torch.Tensor]:
        """θ(α) for the chosen parameters; valid until the next call (the buffers are reused)."""
        if alpha == 1.0 and self._end_copied:
            if self._pieces:
                _, highs, buffers = (list(part) for part in zip(*self._pieces, strict=True))
                torch._foreach_copy_(buffers, highs)
            return {name: self._between[name] for name in self._names}
        if self._kept is not None and alpha != 1.0:
            return self._at_from_kept(alpha)
        if alpha in (0.0, 1.0):
            ends = self._starts if alpha == 0.0 else self._ends
            point = {name: ends[name] for name in self._names}
            for name, buffer in self._reordered.items():
                point[name] = buffer.copy_(ends[name])
            return point
        if not self._interior:
            raise ValueError(f"α = {alpha} lies between the ends, and only the ends were asked for")
        # start + α (end − start), one operation at a time as ``interpolate`` does it.
        if len(self._pieces) == 1:
            ((start, end, buffer),) = self._pieces
            torch.sub(end, start, out=buffer)
            torch.mul(buffer, alpha, out=buffer)
            torch.add(start, buffer, out=buffer)
        elif self._pieces:
            # Many pieces (conv weights reordered one by one): four calls over them all, not
            # three per piece. Each is the same elementwise operation (x + s = s + x exactly).
            lows, highs, buffers = (list(part) for part in zip(*self._pieces, strict=True))
            torch._foreach_copy_(buffers, highs)
            torch._foreach_sub_(buffers, lows)
            torch._foreach_mul_(buffers, alpha)
            torch._foreach_add_(buffers, lows)
        return {name: self._between[name] for name in self._names}

    def _at_from_kept(self, alpha: float) -> dict[str, torch.Tensor]:
        """``at(alpha)`` with θ_t read from the kept vector: α = 0 copied into the buffers, any
        other α as ``(end − start) · α + start`` (``at``'s operations, elementwise)."""
        if alpha != 0.0 and not self._interior:
            raise ValueError(f"α = {alpha} lies between the ends, and only the ends were asked for")
        assert self._kept is not None
        for (_, end, buffer), (first, last) in zip(self._pieces, self._kept_ranges, strict=True):
            if buffer.ndim == 4:  # a conv weight reordered channels-last: read whole, one weight
                self._build(buffer, self._kept.block(first, last - first).view(buffer.shape), end, alpha)
                continue
            flat_end = end.reshape(-1)
            for low in range(0, last - first, offload.TRANSFER_BLOCK):
                high = min(low + offload.TRANSFER_BLOCK, last - first)
                start = self._kept.block(first + low, high - low)
                self._build(buffer[low:high], start, flat_end[low:high], alpha)
        return {name: self._between[name] for name in self._names}

    @staticmethod
    def _build(buffer: torch.Tensor, start: torch.Tensor, end: torch.Tensor, alpha: float) -> None:
        buffer.copy_(start if alpha == 0.0 else end)
        if alpha != 0.0:
            buffer.sub_(start).mul_(alpha).add_(start)


class SegmentPoints:
    """Per-sample losses at chosen points θ_t + α (θ_{t+1} − θ_t) of one segment, chunk by chunk.

    α = 0 is θ_t itself and α = 1 is θ_{t+1} itself (not start + 1·(end − start)). Use it
    inside ``measuring(model, ...)`` (``evaluation_mode``), which ``segment_moments`` does.

    Memory does not grow with the number of points: each point's parameters are built when
    its turn comes on a chunk, into buffers reused for every point (``_OnePoint``), so a
    segment holds one copy of the parameters beside its two ends, plus one chunk's
    activations.

    With ``exploit_affine_input`` and a model that declares an affine input layer (see
    ``affine_input_layer``), that layer runs twice per chunk (at θ_t and θ_{t+1}) instead of
    once per α, and its parameters are never interpolated; the result differs from plain
    evaluation only by float rounding. Batch-norm mode ``recompute`` re-estimates statistics
    at every point over the whole set first, and always takes the plain path.

    Where it pays (``_prefers_channels_last``: float32 conv nets on the CPU) the points are
    evaluated with activations and conv weights in channels-last order, again equal to plain
    evaluation up to float rounding; every point of every segment takes the same path, so
    α = 1 of one segment and α = 0 of the next are still bitwise equal.

    ``precision`` is the arithmetic of the forward passes (``measurement_precision``):
    float32, or bfloat16 autocast, the losses returned in float32 either way.
    """

    def __init__(
        self,
        model: nn.Module,
        start: torch.Tensor | KeptVector,
        end: torch.Tensor | Mapping[str, torch.Tensor],
        alphas: Sequence[float],
        measurement: MeasurementSet,
        bn_mode: BatchNormMode = "train",
        *,
        exploit_affine_input: bool = True,
        precision: MeasurementPrecision = "float32",
    ) -> None:
        check_batchnorm_mode(bn_mode)
        self.precision = check_measurement_precision(precision)
        self._device = start.device
        layout = ParameterLayout.of(model)
        ends = _end_parameters(layout, end)
        if isinstance(start, KeptVector) and start.numel != layout.numel:
            raise ValueError(f"expected a vector of {layout.numel} parameters, got {start.numel}")
        for name, value in ends.items():
            if (value.dtype, value.device) != (start.dtype, start.device):
                # Each point is built in place, in buffers shaped on θ_t.
                raise ValueError(
                    f"segment ends differ in dtype or device: {start.dtype} on {start.device} vs "
                    f"{value.dtype} on {value.device} ({name})"
                )
        self.model = model
        self.alphas = tuple(float(alpha) for alpha in alphas)
        self.measurement = measurement
        self._layer = affine_input_layer(model) if exploit_affine_input and bn_mode != "recompute" else None
        self._channels_last = _prefers_channels_last(model, start)
        # The affine input layer's own parameters are only needed at the two ends.
        prefix = _submodule_name(model, self._layer) + "." if self._layer is not None else None
        interpolated = [name for name in layout.names if prefix is None or not name.startswith(prefix)]
        interior = any(alpha not in (0.0, 1.0) for alpha in self.alphas)
        self._points = _OnePoint(layout, start, end, interpolated, channels_last=self._channels_last, interior=interior)
        self._buffers: list[dict[str, torch.Tensor]] = [{} for _ in self.alphas]
        if bn_mode == "recompute" and batchnorm_layers(model):
            with measuring(model, "eval"), measurement_arithmetic(start.device, self.precision):
                self._buffers = _recompute_statistics(model, len(self.alphas), self.parameters, measurement)
        if prefix is not None:
            # Only what reaches the input layer is read at θ_t, and that is parameter-free:
            # the ends' own views serve, in whatever layout (a kept θ_t: the other end's, which
            # the preprocessing does not read either; only the layer's own are read back). An end
            # held apart serves in θ_t's layout (contiguous), copied where it is not; the layer's
            # output is affine in its parameters, so its forward does not write to them.
            starts = (
                layout.unflatten(start) if isinstance(start, torch.Tensor) else _kept_parameters(layout, start, prefix)
            )
            self._start_parameters = starts if isinstance(start, torch.Tensor) else ends
            self._layer_ends = tuple(
                self._laid_out(
                    {name[len(prefix) :]: value.contiguous() for name, value in ends.items() if name.startswith(prefix)}
                )
                for ends in (starts, ends)
            )

    def parameters(self, index: int) -> dict[str, torch.Tensor]:
        """The parameters of point ``index`` as they are evaluated (the affine input layer's
        own left out where the shortcut stands in for it); valid until the next call."""
        return self._points.at(self.alphas[index])

    def _laid_out(self, parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return _channels_last(parameters) if self._channels_last else parameters

    def losses(self, batch: Batch, targets: torch.Tensor | None = None, *, skip_first: bool = False) -> torch.Tensor:
        """Per-sample losses [P, m] of one chunk of m samples at the P points.

        ``batch`` is a chunk of the measurement set (``measurement.part``/``take``); a tensor
        set's chunk may also be passed as ``losses(inputs, targets)``. ``skip_first`` leaves
        out the first point (P − 1 rows): its losses are known already, as when θ_t's were
        measured as the previous segment's θ_{t+1}.
        """
        if targets is not None:
            batch = (batch, targets)
        first = 1 if skip_first else 0
        if self._channels_last:
            batch = map_tensors(_channels_last_images, batch)
        if self.precision != "float32":
            with measurement_arithmetic(self._device, self.precision):
                return per_sample_losses_in_float32(self._evaluated(batch, first))
        return self._evaluated(batch, first)

    def _evaluated(self, batch: Batch, first: int) -> torch.Tensor:
        if self._layer is not None:
            rows = self._losses_affine_input(batch, first)
        else:
            # One point at a time: its parameters are built, evaluated, and overwritten by the next.
            rows = [
                self.measurement.losses(
                    model_call(self.model, {**self.parameters(index), **self._buffers[index]}), batch
                )
                for index in range(first, len(self.alphas))
            ]
        return torch.stack(rows)

    def _losses_affine_input(self, batch: Batch, first: int) -> list[torch.Tensor]:
        assert self._layer is not None
        layer_input = _input_of(self.measurement, self.model, self._layer, self._start_parameters, batch)
        layer_start, layer_end = (functional_call(self._layer, ends, (layer_input,)) for ends in self._layer_ends)
        rows = []
        # One buffer for every α: a fresh activation-sized tensor per α costs more in page
        # faults than the lerp itself (conv nets, CPU).
        mixed = torch.empty_like(layer_start)
        for index in range(first, len(self.alphas)):
            # lerp returns its ends exactly at weights 0 and 1, so α = 0 and 1 are exact too.
            torch.lerp(layer_start, layer_end, self.alphas[index], out=mixed)
            parameters = self.parameters(index)
            with _forward_replaced(self._layer, lambda: mixed):
                rows.append(self.measurement.losses(model_call(self.model, parameters), batch))
        return rows


def _channels_last_images(tensor: torch.Tensor) -> torch.Tensor:
    """Image batches [n, C, H, W] in channels-last order; every other tensor as it is."""
    if tensor.ndim == 4 and tensor.is_floating_point():
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


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
    precision: MeasurementPrecision = "float32",
) -> NDArray[np.float64]:
    """L(θ_t + α (θ_{t+1} − θ_t)) on the whole measurement set for each α, in one pass.

    ``include_end`` appends α = 1, evaluated at ``end`` itself (not at start + 1·(end − start)).
    See ``SegmentPoints`` for ``exploit_affine_input``, ``precision`` and the batch-norm modes.
    """
    grid = [float(alpha) for alpha in alphas]
    if not grid or grid[0] != 0.0:
        raise ValueError("a segment's α grid must start at 0 (the iterate θ_t)")
    everything = [*grid, 1.0] if include_end else grid
    points = SegmentPoints(
        model,
        start,
        end,
        everything,
        measurement,
        bn_mode,
        exploit_affine_input=exploit_affine_input,
        precision=precision,
    )
    sums = _ChunkSums(len(everything))
    with measuring(model, "eval" if bn_mode == "recompute" else bn_mode):
        for batch in measurement.chunks():
            sums.add(list(points.losses(batch)))
    return sums.means(measurement.size)
