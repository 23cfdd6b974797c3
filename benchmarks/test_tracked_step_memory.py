"""The extra peak memory of a tracked step, against the untracked loop, at K = 10 and K = 20.

Three models are trained by SGD for ``STEPS`` steps, each run in a fresh interpreter of the
same shape (the same imports, model, data, measurement set, optimizer and steps):

- untracked: the plain loop;
- tracked, K = 10 and K = 20: the same loop with a ``WalkTracker`` measuring every step
  exactly (the whole measurement set, every α point, batch norm in "train" mode); and at
  K = 20 precision-targeted, and exact with batch norm in "eval" and "recompute" mode;
- offloaded, each of those again with the tracker's vectors on disk (``offload="disk"``, the
  CPU's way to keep them out of the process; "host" is the GPU's, and on a CPU model it is
  the model's own memory);
- forward: one chunk of the measurement set through the model under ``no_grad``, to size
  "one chunk's activations";
- segment, K = 10 and K = 20: one segment measured as the tracker measures it
  (``SegmentPoints`` and ``measure_segment``), alone, to size the measurement's own part.

The extra peak memory of tracking is the process's peak resident size (``ru_maxrss``)
tracked minus untracked. torch's CPU allocator keeps no statistics and tracemalloc does not
see it, hence the resident size. The forward's and the segment's figures are the peak
resident size during the call above the resident size just before it (the kernel's peak
counter reset first, Linux ``/proc/self/clear_refs``).

Goals, whatever K:

- the segment measurement: at most ``MEASUREMENT_COPIES`` copies of the parameters plus one
  chunk's activations (+ ``MEASUREMENT_SLACK_MIB``);
- the tracked step: the tracker's own state (``TRACKER_STATE_COPIES``: the vectors a record
  needs), plus the measurement's copies, plus one chunk's activations, + ``ALLOCATOR_SLACK_MIB``;
- the offloaded tracked step: the measurement's copies plus one chunk's activations,
  + ``ALLOCATOR_SLACK_MIB`` (issue 17's "two copies of the parameters plus one chunk").
  The geometry that follows the measurement (cosines, norms, distances in float64) works in
  8 MiB blocks and makes no parameter-sized copy.

The time per tracked step (tracked − untracked, per step) prints beside them. Models: the
paper's MLP (28×28, 0.57M parameters), a ResNet-18 (torchvision's, 10 classes, 32×32 images,
11.2M) and a small transformer encoder classifier (written here, 3.4M).
Run: ``pytest benchmarks/test_tracked_step_memory.py --benchmark-only`` (about four minutes).
"""

from __future__ import annotations

import json
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

from benchmarks.conftest import EXTRAS, MEDIANS, in_fresh_process
from sgdwalk.instrument.batchnorm import check_batchnorm_mode, measuring
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout, SegmentPoints
from sgdwalk.instrument.offload_targets import check_offload
from sgdwalk.instrument.sampling import PrecisionTarget, SamplePlan, measure_segment
from sgdwalk.instrument.segment import alpha_grid
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.training.models import build_model

GRID_SIZES = (10, 20)
# The other ways of measuring, at the larger K: precision-targeted (batch norm in "train" mode),
# and exact with batch norm in "eval" and "recompute" mode (statistics re-estimated per point).
MODES = ("targeted", "eval", "recompute")
# Where the offloaded variants keep the tracker's vectors (``WalkTracker(offload=...)``).
OFFLOAD = "disk"
STEPS = 2  # the second tracked step carries α = 0 and holds g_{t−1} too
TRAIN_BATCH = 16

# The measurement's goal: two copies of the parameters (it makes one: one point's θ(α) at a
# time, its conv weights in channels-last order where they are evaluated so).
MEASUREMENT_COPIES = 2
# Beside the parameters and the activations: a look's per-sample losses, the chunk's
# channels-last copy, the affine input layer's outputs at the two ends (the MLP: 3 × 2 MiB).
MEASUREMENT_SLACK_MIB = 16.0
# The copies of the parameters the tracker holds while it measures: θ_0 (the distance from
# init), θ_t (the segment's start; θ_{t+1} is read from the model in place) and g_t (the next
# step's previous gradient). g_{t−1} and the previous update are let go once their cosines are
# taken, before the measurement, so the other peak, while the update cosine is taken, holds
# four (θ_0, θ_t, g_t and the previous update) and no measurement. θ_{t+1} is copied, and θ_t
# turned into the update in place, after the measurement. Below this the record would lose a
# field: both cosines need a vector of the last step, and the segment needs θ_t.
TRACKER_STATE_COPIES = 3
# Fresh interpreters of the same shape differ in peak resident size (where the allocator
# places and returns blocks, lazily loaded kernels): tracked ResNet-18 runs spread over
# ~30 MiB. 64 MiB covers that and the training step's blocks the allocator keeps, and is far
# below the K copies of the parameters this guards against (ResNet-18: 43 MiB a copy).
ALLOCATOR_SLACK_MIB = 64.0

MIB = 1024.0 * 1024.0


class SmallTransformer(nn.Module):
    """A sequence classifier: token and position embeddings, a post-norm transformer encoder,
    the mean over positions, a linear head."""

    def __init__(self, vocabulary: int, length: int, width: int, layers: int, classes: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Parameter(0.02 * torch.randn(length, width))
        layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=4 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        encoded: torch.Tensor = self.encoder(self.tokens(tokens) + self.positions)
        logits: torch.Tensor = self.head(encoded.mean(dim=1))
        return logits


@dataclass(frozen=True)
class Setting:
    """A model, its training and measurement samples: (model, inputs, targets, measurement size, chunk)."""

    measurement_size: int
    chunk_size: int

    def build(self, name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        samples = self.measurement_size + STEPS * TRAIN_BATCH
        if name == "mlp":
            return build_model("mlp", 1, 28, 10), torch.randn(samples, 1, 28, 28), torch.randint(0, 10, (samples,))
        if name == "resnet18":
            from torchvision.models import resnet18

            return resnet18(num_classes=10), torch.randn(samples, 3, 32, 32), torch.randint(0, 10, (samples,))
        if name == "transformer":
            model = SmallTransformer(vocabulary=1000, length=16, width=256, layers=4, classes=10)
            return model, torch.randint(0, 1000, (samples, 16)), torch.randint(0, 10, (samples,))
        raise ValueError(f"unknown model {name!r}")


# Sized so that a tracked step at K = 20 takes a few seconds on one CPU thread.
SETTINGS = {
    "mlp": Setting(measurement_size=1000, chunk_size=500),
    "resnet18": Setting(measurement_size=64, chunk_size=32),
    "transformer": Setting(measurement_size=32, chunk_size=16),
}


def _status_kib(field: str) -> int:
    found = re.search(field + r":\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert found is not None, field
    return int(found.group(1))


def child(name: str, variant: str) -> None:
    """One fresh process's run (``variant``: "untracked", "forward", "segment-K", "K", "K:mode",
    or either with "/disk": the vectors offloaded); prints a JSON line."""
    torch.set_num_threads(1)
    setting = SETTINGS[name]
    model, inputs, targets = setting.build(name)
    size = setting.measurement_size
    measurement = MeasurementSet(inputs[:size], targets[:size], chunk_size=setting.chunk_size)
    result: dict[str, float] = {"parameter_bytes": 4.0 * ParameterLayout.of(model).numel}
    if variant == "forward":
        chunk = next(measurement.chunks())
        Path("/proc/self/clear_refs").write_text("5")  # the peak counter starts from here
        before = _status_kib("VmRSS")
        with torch.no_grad(), measuring(model, "train"):
            measurement.losses(model, chunk)
        result["activation_bytes"] = 1024.0 * (_status_kib("VmHWM") - before)
    elif variant.startswith("segment-"):
        start = flat_parameters(model)
        end = start + 1e-3 * torch.randn_like(start)
        alphas = (*(float(alpha) for alpha in alpha_grid(int(variant.removeprefix("segment-")))), 1.0)
        plan = SamplePlan.of(measurement, None)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        with torch.no_grad():
            measure_segment(SegmentPoints(model, start, end, alphas, measurement), measurement, plan, "train")
        result["measurement_bytes"] = 1024.0 * (_status_kib("VmHWM") - before)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        tracker = None if variant == "untracked" else _tracker(model, measurement, variant)
        model.train()
        began = time.perf_counter()
        for step in range(STEPS):
            batch = slice(size + step * TRAIN_BATCH, size + (step + 1) * TRAIN_BATCH)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            if tracker is None:
                optimizer.step()
            else:
                with tracker.step(minibatch_loss=loss):
                    optimizer.step()
        result["seconds_per_step"] = (time.perf_counter() - began) / STEPS
        result["peak_bytes"] = 1024.0 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


def _tracker(model: nn.Module, measurement: MeasurementSet, variant: str) -> WalkTracker:
    """A tracker of variant "K" (exact, batch norm in "train" mode) or "K:mode" (``MODES``),
    its vectors kept beside the model, or offloaded where the variant ends in "/disk"."""
    grid, _, store = variant.partition("/")
    k, _, mode = grid.partition(":")
    offload = check_offload(store or None)
    if mode == "targeted":
        return WalkTracker(
            model,
            measurement,
            num_alphas=int(k),
            precision=PrecisionTarget(height_relative_se=0.1),
            offload=offload,
        )
    return WalkTracker(
        model, measurement, num_alphas=int(k), bn_mode=check_batchnorm_mode(mode or "train"), offload=offload
    )


@pytest.mark.parametrize("name", list(SETTINGS))
def test_extra_peak_memory_of_a_tracked_step_does_not_grow_with_k(benchmark: BenchmarkFixture, name: str) -> None:
    runs: dict[str, dict[str, float]] = {}
    modes = tuple(f"{GRID_SIZES[-1]}:{mode}" for mode in MODES)
    offloaded = tuple(f"{variant}/{OFFLOAD}" for variant in (*(str(k) for k in GRID_SIZES), *modes))
    variants = (
        "untracked",
        "forward",
        *(f"segment-{k}" for k in GRID_SIZES),
        *(str(k) for k in GRID_SIZES),
        *modes,
        *offloaded,
    )

    def one_round() -> None:
        for variant in variants:
            runs[variant] = in_fresh_process("benchmarks.test_tracked_step_memory", name, variant)

    benchmark.pedantic(one_round, rounds=1, warmup_rounds=0)
    group = f"tracked-step-memory-{name}"
    untracked = runs["untracked"]
    parameters = untracked["parameter_bytes"]
    activations = runs["forward"]["activation_bytes"]
    measurement_bound = MEASUREMENT_COPIES * parameters + activations + MEASUREMENT_SLACK_MIB * MIB
    step_bound = (
        TRACKER_STATE_COPIES * parameters + MEASUREMENT_COPIES * parameters + activations + ALLOCATOR_SLACK_MIB * MIB
    )
    offloaded_bound = MEASUREMENT_COPIES * parameters + activations + ALLOCATOR_SLACK_MIB * MIB
    MEDIANS[group]["reference"] = untracked["seconds_per_step"]
    EXTRAS[group]["parameters"] = f"{parameters / MIB:.1f} MiB; one chunk's activations {activations / MIB:.1f} MiB"
    met = True
    for k in GRID_SIZES:
        tracked = runs[str(k)]
        extra = tracked["peak_bytes"] - untracked["peak_bytes"]
        measured = runs[f"segment-{k}"]["measurement_bytes"]
        step_cost = tracked["seconds_per_step"] - untracked["seconds_per_step"]
        MEDIANS[group][f"tracked K={k}"] = tracked["seconds_per_step"]
        EXTRAS[group][f"step, K={k}"] = (
            f"extra peak {extra / MIB:.1f} MiB = {extra / parameters:.1f}x parameters "
            f"(goal {step_bound / MIB:.0f}); {step_cost:.2f} s per tracked step"
        )
        EXTRAS[group][f"segment, K={k}"] = (
            f"peak {measured / MIB:.1f} MiB = {measured / parameters:.1f}x parameters (goal {measurement_bound / MIB:.0f})"
        )
        benchmark.extra_info[f"extra_peak_mib_k{k}"] = extra / MIB
        benchmark.extra_info[f"extra_peak_in_parameters_k{k}"] = extra / parameters
        benchmark.extra_info[f"segment_peak_mib_k{k}"] = measured / MIB
        benchmark.extra_info[f"tracked_step_seconds_k{k}"] = step_cost
        print(f"{name} K={k}: step {EXTRAS[group][f'step, K={k}']}; segment {EXTRAS[group][f'segment, K={k}']}")
        met = met and extra <= step_bound and measured <= measurement_bound
    for variant in modes:
        extra = runs[variant]["peak_bytes"] - untracked["peak_bytes"]
        EXTRAS[group][f"step, K={variant}"] = (
            f"extra peak {extra / MIB:.1f} MiB = {extra / parameters:.1f}x parameters (goal {step_bound / MIB:.0f})"
        )
        benchmark.extra_info[f"extra_peak_in_parameters_k{variant}"] = extra / parameters
        print(f"{name} K={variant}: step {EXTRAS[group][f'step, K={variant}']}")
        met = met and extra <= step_bound
    for variant in offloaded:
        extra = runs[variant]["peak_bytes"] - untracked["peak_bytes"]
        EXTRAS[group][f"step, K={variant}"] = (
            f"extra peak {extra / MIB:.1f} MiB = {extra / parameters:.1f}x parameters (goal {offloaded_bound / MIB:.0f})"
        )
        benchmark.extra_info[f"extra_peak_in_parameters_k{variant}"] = extra / parameters
        MEDIANS[group][f"tracked K={variant}"] = runs[variant]["seconds_per_step"]
        print(f"{name} K={variant}: step {EXTRAS[group][f'step, K={variant}']}")
        met = met and extra <= offloaded_bound
    goal = (
        f"segment peak <= {MEASUREMENT_COPIES} x parameters + one chunk's activations + {MEASUREMENT_SLACK_MIB:.0f} MiB; "
        f"tracked step's extra peak <= ({TRACKER_STATE_COPIES} (the tracker's state) + "
        f"{MEASUREMENT_COPIES} (the measurement)) x parameters + one chunk's activations "
        f"+ {ALLOCATOR_SLACK_MIB:.0f} MiB; "
        f"at K = {' and '.join(str(k) for k in GRID_SIZES)}, and {', '.join(MODES)} at K = {GRID_SIZES[-1]}; "
        f"offloaded to {OFFLOAD}, each of those <= {MEASUREMENT_COPIES} x parameters + one chunk's activations "
        f"+ {ALLOCATOR_SLACK_MIB:.0f} MiB"
    )
    benchmark.extra_info.update(
        parameter_mib=parameters / MIB, activation_mib=activations / MIB, goal=goal, goal_met=met
    )
    assert met, f"{name}: {EXTRAS[group]} ({goal})"
