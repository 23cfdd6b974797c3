"""Segment measurements bitwise equal to evaluating every point on its own.

The reference builds each point as ``interpolate(θ_t, θ_{t+1}, α)`` (θ_{t+1} itself at
α = 1) and runs a plain ``functional_call`` forward on each chunk, one point after the other;
the records' moments are fed chunk by chunk from those losses, as the plan reads them. The
instrument builds one point's parameters at a time into reused buffers and copies losses to
the host once per look: none of that may move a bit of any record, at K = 10 or K = 20.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sgdwalk.instrument.batchnorm import BatchNormMode, batchnorm_layers, measuring
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import (
    MeasurementSet,
    ParameterLayout,
    SegmentPoints,
    affine_input_layer,
    interpolate,
    model_parameters,
    segment_losses,
)
from sgdwalk.instrument.paired import PairedLossMoments
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.sampling import MeasuredSegment, PrecisionTarget
from sgdwalk.instrument.segment import alpha_grid, summarize_segment
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.instrument.uncertainty import segment_uncertainty
from sgdwalk.training.models import build_model
from tests.helpers import classification_data, mlp, recomputed_statistics_model, warm_batchnorm

GRID_SIZES = (10, 20)
STEPS = 4
TRAIN_SIZE, MEASURE_SIZE, CHUNK, BATCH = 40, 64, 16, 8
# Looks at 8, 16, 32 and 64 samples: chunks of 8 and 16, so a look spans several chunks.
TARGET = PrecisionTarget(first_look=8, seed=3)
# Steps this large make segments whose barrier test is decided early: the targeted walk stops
# at different looks from step to step.
LR = 5.0


# ------------------------------------------------------------------------ the reference
def point_at(start: torch.Tensor, end: torch.Tensor, alpha: float) -> torch.Tensor:
    return end if alpha == 1.0 else interpolate(start, end, alpha)


def laid_out(parameters: Mapping[str, torch.Tensor], channels_last: bool) -> dict[str, torch.Tensor]:
    """Conv weights in channels-last order where the instrument evaluates them so."""
    if not channels_last:
        return dict(parameters)
    return {
        name: value.contiguous(memory_format=torch.channels_last) if value.ndim == 4 else value
        for name, value in parameters.items()
    }


def layer_at_ends(
    model: nn.Module, layer: nn.Module, start: torch.Tensor, end: torch.Tensor, channels_last: bool
) -> list[dict[str, torch.Tensor]]:
    """The affine input layer's own parameters at θ_t and at θ_{t+1}."""
    layout = ParameterLayout.of(model)
    prefix = next(name for name, module in model.named_modules() if module is layer) + "."
    return [
        laid_out(
            {name[len(prefix) :]: value for name, value in layout.unflatten(point).items() if name.startswith(prefix)},
            channels_last,
        )
        for point in (start, end)
    ]


def lerping_hook(ends: list[dict[str, torch.Tensor]], alpha: float) -> Callable[..., torch.Tensor | None]:
    """A forward hook making the layer return the lerp of its outputs at the two ends."""
    inside: list[bool] = []  # the layer at the two ends runs this hook too: leave those alone

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
        if inside:
            return None
        inside.append(True)
        at_start, at_end = (functional_call(module, parameters, args) for parameters in ends)
        inside.clear()
        return torch.lerp(at_start, at_end, alpha)

    return hook


def reference_losses(
    model: nn.Module,
    start: torch.Tensor,
    end: torch.Tensor,
    alphas: Sequence[float],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    buffers: Sequence[dict[str, torch.Tensor]] | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Per-sample losses [P, m] at each α, one plain forward per point.

    A model with an affine input layer has that layer's output replaced by the lerp of its
    outputs at the two ends (what the shortcut computes, see ``affine_input_layer``).
    """
    layout = ParameterLayout.of(model)
    layer = affine_input_layer(model)
    ends = None if layer is None else layer_at_ends(model, layer, start, end, channels_last)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    rows = []
    for index, alpha in enumerate(alphas):
        parameters = laid_out(layout.unflatten(point_at(start, end, alpha)), channels_last)
        handle = None if layer is None or ends is None else layer.register_forward_hook(lerping_hook(ends, alpha))
        try:
            extra = {} if buffers is None else buffers[index]
            outputs = functional_call(model, {**parameters, **extra}, (inputs,))
        finally:
            if handle is not None:
                handle.remove()
        rows.append(nn.functional.cross_entropy(outputs, targets, reduction="none"))
    return torch.stack(rows)


def recomputed_buffers(model: nn.Module, point: torch.Tensor, measurement: MeasurementSet) -> dict[str, torch.Tensor]:
    """ "recompute" mode's statistics at ``point``, from a copy of the model run chunk by chunk."""
    copied = recomputed_statistics_model(model, point, measurement)
    names = {id(layer) for layer in batchnorm_layers(copied)}
    return {
        f"{module_name}.{buffer_name}": buffer
        for module_name, module in copied.named_modules()
        if id(module) in names
        for buffer_name, buffer in module.named_buffers(recurse=False)
    }


def reference_record_fields(
    model: nn.Module,
    start: torch.Tensor,
    end: torch.Tensor,
    tracker: WalkTracker,
    samples: int,
    carried: torch.Tensor | None,
) -> tuple[dict[str, Any], torch.Tensor]:
    """The segment fields of step t's record, and the per-sample losses at θ_{t+1} over the
    samples read (which the next step reuses as its α = 0, as the tracker does)."""
    alphas = (*(float(a) for a in tracker.alphas), 1.0)
    measurement, plan, bn_mode = tracker.measurement, tracker.plan, tracker.bn_mode
    buffers = None
    if bn_mode == "recompute":
        buffers = [recomputed_buffers(model, point_at(start, end, alpha), measurement) for alpha in alphas]
    moments = PairedLossMoments(len(alphas))
    end_losses = []
    with torch.no_grad(), measuring(model, "eval" if bn_mode == "recompute" else bn_mode):
        for look in range(len(plan.look_ends)):
            for first, stop in plan.chunk_ranges(look):
                inputs, targets = plan.chunk(measurement, first, stop)
                chunk = reference_losses(model, start, end, alphas, inputs, targets, buffers=buffers)
                if carried is not None and stop <= carried.shape[0]:
                    chunk[0] = carried[first:stop]
                moments.update(chunk)
                end_losses.append(chunk[-1])
            if moments.count == samples:
                break
    assert moments.count == samples, f"the record read {samples} samples, not a look's end"
    means = moments.means
    num_looks = len(plan.look_ends)
    confidence = tracker.precision.confidence if tracker.precision is not None else TARGET.confidence
    measured = MeasuredSegment(
        losses=tuple(float(value) for value in means),
        summary=summarize_segment(alphas[:-1], means[:-1], float(means[-1])),
        uncertainty=segment_uncertainty(
            means,
            moments.covariance,
            moments.count,
            confidence=confidence,
            looks=num_looks,
        ),
        end_losses=torch.cat(end_losses),
        looks=0,
    )
    fields = {"segment_losses": measured.losses, **measured.summary.as_dict(), **measured.uncertainty.record_fields()}
    return fields, measured.end_losses


def walk(
    num_alphas: int, bn_mode: BatchNormMode, precision: PrecisionTarget | None, **tracker_options: Any
) -> list[tuple[StepRecord, dict]]:
    """A short SGD walk of a batch-norm MLP (no affine input layer, no convolution: the plain
    path), each record beside its reference fields; ``tracker_options`` go to the tracker."""
    torch.manual_seed(0)
    model = mlp(0, hidden=16, batchnorm=True)
    inputs, targets = classification_data(0, TRAIN_SIZE + MEASURE_SIZE)
    measurement = MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE], chunk_size=CHUNK)
    tracker = WalkTracker(
        model, measurement, num_alphas=num_alphas, bn_mode=bn_mode, precision=precision, **tracker_options
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    compared = []
    carried = None
    for step in range(STEPS):
        batch = slice(MEASURE_SIZE + step * BATCH, MEASURE_SIZE + (step + 1) * BATCH)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
        loss.backward()
        start = flat_parameters(model)
        with tracker.step(minibatch_loss=loss):
            optimizer.step()
        record = tracker.records[-1]
        assert record.samples is not None
        # Step t's α = 1 losses are step t + 1's α = 0 only while the buffers read are the same:
        # in "eval" the training forward has moved the running statistics since (the MLP's only buffers).
        expected, carried = reference_record_fields(
            model, start, flat_parameters(model), tracker, record.samples, None if bn_mode == "eval" else carried
        )
        compared.append((record, expected))
    return compared


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("num_alphas", GRID_SIZES)
@pytest.mark.parametrize(
    ("bn_mode", "targeted"),
    [("train", False), ("eval", False), ("recompute", False), ("train", True), ("eval", True)],
    ids=["train-exact", "eval-exact", "recompute-exact", "train-targeted", "eval-targeted"],
)
def test_records_of_a_walk_are_bitwise_the_plain_evaluation(
    num_alphas: int, bn_mode: BatchNormMode, targeted: bool
) -> None:
    compared = walk(num_alphas, bn_mode, TARGET if targeted else None)
    for record, expected in compared:
        actual = {name: value for name, value in record.as_dict().items() if name in expected}
        assert actual == expected, f"step {record.step}"
    if targeted:
        # Some step stopped early, so the looks before the last were compared too.
        assert any(record.samples is not None and record.samples < MEASURE_SIZE for record, _ in compared)


def fast_path_setting(arch: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, MeasurementSet]:
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, image_size=28, num_classes=10, width_multiplier=0.125)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(20, 1, 28, 28, generator=generator)
    warm_batchnorm(model, inputs)  # running statistics of its own, so eval mode uses them
    start = flat_parameters(model)
    end = start + 0.05 * torch.randn(start.shape, generator=generator)
    targets = torch.randint(0, 10, (20,), generator=generator)
    return model, start, end, MeasurementSet(inputs, targets, chunk_size=12)


@pytest.mark.parametrize("num_alphas", GRID_SIZES)
@pytest.mark.parametrize("bn_mode", ["train", "eval"])
@pytest.mark.parametrize(("arch", "channels_last"), [("mlp", False), ("convnet", True)])
def test_the_affine_input_and_channels_last_paths_are_bitwise_as_before(
    arch: str, channels_last: bool, bn_mode: BatchNormMode, num_alphas: int
) -> None:
    # The MLP takes the affine input shortcut; the conv net takes it in channels-last order.
    model, start, end, measurement = fast_path_setting(arch)
    alphas = (*(float(a) for a in alpha_grid(num_alphas)), 1.0)
    points = SegmentPoints(model, start, end, alphas, measurement, bn_mode)
    totals = torch.zeros(len(alphas), dtype=torch.float64)
    with torch.no_grad(), measuring(model, bn_mode):
        for inputs, targets in measurement.chunks():
            expected = reference_losses(model, start, end, alphas, inputs, targets, channels_last=channels_last)
            assert torch.equal(points.losses(inputs, targets), expected)
            assert torch.equal(points.losses(inputs, targets, skip_first=True), expected[1:])
            for index in range(len(alphas)):
                totals[index] += expected[index].double().sum()
    measured = segment_losses(model, start, end, alphas[:-1], measurement, bn_mode, include_end=True)
    assert measured.tolist() == (totals / measurement.size).tolist()


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels-last"])
def test_each_point_is_built_as_interpolate_builds_it(channels_last: bool) -> None:
    model, start, end, measurement = fast_path_setting("convnet" if channels_last else "mlp")
    alphas = (*(float(a) for a in alpha_grid(GRID_SIZES[-1])), 1.0)
    points = SegmentPoints(model, start, end, alphas, measurement, exploit_affine_input=False)
    layout = ParameterLayout.of(model)
    for index, alpha in enumerate(alphas):
        built = points.parameters(index)
        expected = laid_out(layout.unflatten(point_at(start, end, alpha)), channels_last)
        assert built.keys() == expected.keys()
        for name, value in built.items():
            assert torch.equal(value, expected[name]), (alpha, name)
            assert value.stride() == expected[name].stride(), (alpha, name)


@pytest.mark.parametrize("exploit_affine_input", [True, False], ids=["shortcut", "plain"])
@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_an_end_read_from_the_model_in_place_is_bitwise_the_end_vector(arch: str, exploit_affine_input: bool) -> None:
    # The tracker reads θ_{t+1} from the model's own parameters (no copy): every point, its
    # layout and every loss must be those of the same end given as one vector.
    model, start, end, measurement = fast_path_setting(arch)
    torch.nn.utils.vector_to_parameters(end.clone(), model.parameters())
    alphas = (*(float(a) for a in alpha_grid(GRID_SIZES[0])), 1.0)
    as_vector = SegmentPoints(model, start, end, alphas, measurement, exploit_affine_input=exploit_affine_input)
    in_place = SegmentPoints(
        model, start, model_parameters(model), alphas, measurement, exploit_affine_input=exploit_affine_input
    )
    for index in range(len(alphas)):
        expected = {name: value.clone() for name, value in as_vector.parameters(index).items()}
        for name, value in in_place.parameters(index).items():
            assert torch.equal(value, expected[name]), (alphas[index], name)
            assert value.stride() == expected[name].stride(), (alphas[index], name)
    with torch.no_grad(), measuring(model, "train"):
        for inputs, targets in measurement.chunks():
            assert torch.equal(in_place.losses(inputs, targets), as_vector.losses(inputs, targets))


def test_an_end_of_other_parameters_is_refused() -> None:
    model, start, _, measurement = fast_path_setting("mlp")
    parameters = model_parameters(model)
    first = next(iter(parameters))
    with pytest.raises(ValueError, match="are not the model's"):
        SegmentPoints(model, start, {name: parameters[name] for name in list(parameters)[1:]}, (0.0, 1.0), measurement)
    with pytest.raises(ValueError, match="differ in shape"):
        SegmentPoints(model, start, {**parameters, first: parameters[first][:1]}, (0.0, 1.0), measurement)
    with pytest.raises(ValueError, match="dtype or device"):
        SegmentPoints(model, start, {**parameters, first: parameters[first].double()}, (0.0, 1.0), measurement)
