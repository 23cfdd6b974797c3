"""Segment measurement against K plain forward passes and against the naive way.

- reference: K plain forward passes of the model over the same measurement set (the cost of
  evaluating K parameter vectors without any sgdwalk machinery);
- sgdwalk: ``segment_losses`` over a K-point grid (functional_call, the affine input layer
  evaluated twice per chunk);
- naive: load a state_dict per α, then loop over the batches.

Goals (asserted once a group's reference and sgdwalk have both run): sgdwalk ≤ 0.5x the
reference for the MLP, below 0.93x for the conv net and below 0.84x for VGG-11 at quarter
width (the ratios measured before the segment evaluation was sped up). The conv nets' gain comes mostly from evaluating in
channels-last layout (see ``measurement._prefers_channels_last``), which the plain reference,
a user's ordinary forward pass, does not use.

Peak memory: the peak resident size during one measurement above the resident size just
before it, in a fresh interpreter, with the kernel's peak counter reset first (Linux
``/proc/self/clear_refs``); printed for the measurement and for the K plain forward passes.
torch's CPU allocator keeps no statistics and tracemalloc does not see it, hence RSS.
Run: ``pytest benchmarks --benchmark-only`` (ratios print at the end).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

from benchmarks.conftest import EXTRAS, MEDIANS, record_goal, remember
from sgdwalk.instrument.batchnorm import measuring
from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout, segment_losses
from sgdwalk.instrument.segment import alpha_grid
from sgdwalk.training.models import build_model

NUM_ALPHAS = 10
# 2,000 samples in chunks of 1,000: the default walk's measurement set.
MEASUREMENT_SIZE = 2_000
CHUNK_SIZE = 1_000

# (group name, architecture, channels, image size, width multiplier)
MODELS = [
    ("mlp-784-500-350-10", "mlp", 1, 28, 1.0),
    ("convnet-28", "convnet", 1, 28, 1.0),
    ("vgg11-quarter-width-32", "vgg11", 3, 32, 0.25),
]


def _setup(
    arch: str, channels: int, size: int, width: float
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, MeasurementSet]:
    torch.manual_seed(0)
    model = build_model(arch, channels, size, 10, width)
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    end = start + 0.01 * torch.randn_like(start)
    measurement = MeasurementSet(
        torch.randn(MEASUREMENT_SIZE, channels, size, size),
        torch.randint(0, 10, (MEASUREMENT_SIZE,)),
        chunk_size=CHUNK_SIZE,
    )
    return model, start, end, measurement


def _plain_forwards(model: nn.Module, measurement: MeasurementSet) -> float:
    total = 0.0
    with torch.no_grad(), measuring(model, "train"):
        for _ in range(NUM_ALPHAS):
            for inputs, targets in measurement.chunks():
                total += float(F.cross_entropy(model(inputs), targets, reduction="sum"))
    return total


def _naive(model: nn.Module, start: torch.Tensor, end: torch.Tensor, measurement: MeasurementSet) -> list[float]:
    layout = ParameterLayout.of(model)
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    losses = []
    with torch.no_grad(), measuring(model, "train"):
        for alpha in alpha_grid(NUM_ALPHAS):
            model.load_state_dict({**layout.unflatten(start + float(alpha) * (end - start)), **buffers})
            total = 0.0
            for inputs, targets in measurement.chunks():
                total += float(F.cross_entropy(model(inputs), targets, reduction="sum"))
            losses.append(total / measurement.size)
    return losses


# Run in a fresh interpreter, so the allocator holds nothing from earlier benchmarks. Writing
# "5" to /proc/self/clear_refs resets the peak resident size (VmHWM) to the current one, so
# VmHWM afterwards minus VmRSS before is the peak that the call itself added.
_PEAK_MEMORY_SCRIPT = """
import re, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from benchmarks.test_segment_speed import _setup, _plain_forwards, NUM_ALPHAS
from sgdwalk.instrument.measurement import segment_losses
from sgdwalk.instrument.segment import alpha_grid
def status(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
model, start, end, measurement = _setup({arch!r}, {channels}, {size}, {width})
run = {{
    "sgdwalk": lambda: segment_losses(model, start, end, alpha_grid(NUM_ALPHAS), measurement, "train"),
    "reference": lambda: _plain_forwards(model, measurement),
}}[{method!r}]
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = status("VmRSS")
run()
print((status("VmHWM") - before) / 1024)
"""


def _peak_memory_mib(method: str, arch: str, channels: int, size: int, width: float) -> float:
    root = str(Path(__file__).resolve().parent.parent)
    script = _PEAK_MEMORY_SCRIPT.format(root=root, method=method, arch=arch, channels=channels, size=size, width=width)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("group", "arch", "channels", "size", "width"), MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("method", ["reference", "sgdwalk", "naive"])
def test_segment_measurement(
    benchmark: BenchmarkFixture, group: str, arch: str, channels: int, size: int, width: float, method: str
) -> None:
    model, start, end, measurement = _setup(arch, channels, size, width)
    grid = alpha_grid(NUM_ALPHAS)
    runs: dict[str, Callable[[], object]] = {
        "reference": lambda: _plain_forwards(model, measurement),
        "sgdwalk": lambda: segment_losses(model, start, end, grid, measurement, "train"),
        "naive": lambda: _naive(model, start, end, measurement),
    }
    benchmark.group = group
    benchmark.pedantic(runs[method], rounds=3, warmup_rounds=1)
    remember(benchmark, group, method)
    if method in ("sgdwalk", "reference"):
        EXTRAS[group][f"peak MiB, {method}"] = f"{_peak_memory_mib(method, arch, channels, size, width):.1f}"
        _check_goal(group)


# group -> (bound on the sgdwalk / reference ratio, whether it may be reached): the goals above.
RATIO_GOALS = {"mlp-784-500-350-10": (0.5, True), "convnet-28": (0.93, False), "vgg11-quarter-width-32": (0.84, False)}


def _check_goal(group: str) -> None:
    """Asserted by whichever of the group's reference and sgdwalk benchmarks runs second
    (``--benchmark-only`` skips tests without the benchmark fixture)."""
    medians = MEDIANS[group]
    if "reference" not in medians or "sgdwalk" not in medians:
        return
    ratio = medians["sgdwalk"] / medians["reference"]
    bound, reachable = RATIO_GOALS[group]
    met = ratio <= bound if reachable else ratio < bound
    goal = f"sgdwalk / reference {'<=' if reachable else '<'} {bound}"
    record_goal(group, "sgdwalk", goal, met)
    assert met, f"{group}: sgdwalk at {ratio:.3f}x the reference, goal {goal}"
