"""SegmentPoints' fast path (affine input layer, channels-last conv nets) against plain,
independent evaluation: a copy of the model loaded with each point, run in its ordinary
contiguous layout, one point at a time."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import vector_to_parameters

from sgdwalk.instrument.batchnorm import BatchNormMode, batchnorm_layers, measuring
from sgdwalk.instrument.measurement import MeasurementSet, SegmentPoints, _prefers_channels_last
from sgdwalk.training.models import ARCHITECTURES, build_model

# Per-sample float32 losses of the fast path and of plain evaluation differ by rounding only:
# a lerped first-layer output against the layer at lerped weights, and (conv nets) oneDNN's
# channels-last summation order against the contiguous one, a few ulps per activation that
# batch norm and up to eight conv layers carry to ~1e-6 of a loss of order 1. 1e-5 relative
# (with 1e-6 absolute for losses near 0) leaves headroom and stays far below any height or
# barrier the suites resolve.
FAST_PATH_RTOL = 1e-5
FAST_PATH_ATOL = 1e-6

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _setting(arch: str, bn_mode: BatchNormMode) -> tuple[nn.Module, torch.Tensor, torch.Tensor, MeasurementSet]:
    torch.manual_seed(0)
    model = build_model(arch, in_channels=1, image_size=28, num_classes=10, width_multiplier=0.125)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(20, 1, 28, 28, generator=generator)
    if bn_mode == "eval":
        # Running statistics away from their (0, 1) start, so eval mode uses real ones.
        model.train()
        with torch.no_grad():
            model(inputs)
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    end = start + 0.05 * torch.randn(start.shape, generator=generator)
    targets = torch.randint(0, 10, (20,), generator=generator)
    return model, start, end, MeasurementSet(inputs, targets, chunk_size=12)


def _plain_losses(
    model: nn.Module, point: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor, bn_mode: BatchNormMode
) -> torch.Tensor:
    copied = copy.deepcopy(model)
    vector_to_parameters(point, copied.parameters())
    copied.eval()
    if bn_mode == "train":
        for layer in batchnorm_layers(copied):
            layer.train()
            layer.track_running_stats = False
    with torch.no_grad():
        return F.cross_entropy(copied(inputs), targets, reduction="none")


def _point(start: torch.Tensor, end: torch.Tensor, alpha: float) -> torch.Tensor:
    return end if alpha == 1.0 else start + alpha * (end - start)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("bn_mode", ["train", "eval"])
def test_fast_path_matches_plain_evaluation_per_sample(arch: str, bn_mode: BatchNormMode) -> None:
    model, start, end, measurement = _setting(arch, bn_mode)
    points = SegmentPoints(model, start, end, ALPHAS, measurement, bn_mode)
    for inputs, targets in measurement.chunks():
        with torch.no_grad(), measuring(model, bn_mode):
            fast = points.losses(inputs, targets)
        plain = torch.stack([_plain_losses(model, _point(start, end, a), inputs, targets, bn_mode) for a in ALPHAS])
        assert fast.shape == (len(ALPHAS), targets.shape[0])
        torch.testing.assert_close(fast, plain, rtol=FAST_PATH_RTOL, atol=FAST_PATH_ATOL)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_end_of_one_segment_is_bitwise_the_start_of_the_next(arch: str) -> None:
    # The tracker reuses α = 1's losses as the next segment's α = 0: the fast path must
    # compute them identically from either side.
    model, start, middle, measurement = _setting(arch, "train")
    end = middle + 0.05 * torch.randn(middle.shape, generator=torch.Generator().manual_seed(3))
    first = SegmentPoints(model, start, middle, ALPHAS, measurement, "train")
    second = SegmentPoints(model, middle, end, ALPHAS, measurement, "train")
    inputs, targets = next(measurement.chunks())
    with torch.no_grad(), measuring(model, "train"):
        assert torch.equal(first.losses(inputs, targets)[-1], second.losses(inputs, targets)[0])
        assert torch.equal(second.losses(inputs, targets, skip_first=True), second.losses(inputs, targets)[1:])


def test_channels_last_only_for_float32_conv_nets_on_the_cpu() -> None:
    conv = build_model("convnet", 1, 28, 10, 0.125)
    mlp = build_model("mlp", 1, 28, 10, 0.125)
    assert _prefers_channels_last(conv, torch.zeros(3))
    assert not _prefers_channels_last(conv, torch.zeros(3, dtype=torch.float64))
    assert not _prefers_channels_last(mlp, torch.zeros(3))


def test_the_fast_path_leaves_the_models_layout_and_parameters_alone() -> None:
    model, start, end, measurement = _setting("convnet", "train")
    before = {name: value.clone() for name, value in model.state_dict().items()}
    points = SegmentPoints(model, start, end, ALPHAS, measurement, "train")
    with torch.no_grad(), measuring(model, "train"):
        points.losses(*next(measurement.chunks()))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
        assert value.is_contiguous(), name
