"""Segment measurement against K plain forward passes and against the naive way.

- reference: K plain forward passes of the model over the same measurement set (the cost of
  evaluating K parameter vectors without any sgdwalk machinery);
- sgdwalk: ``segment_losses`` over a K-point grid (functional_call, the affine input layer
  evaluated twice per chunk);
- naive: load a state_dict per α, then loop over the batches.

Goals (issue "Real networks"): sgdwalk ≤ 1.0x the reference for conv nets, ≤ 0.6x for the MLP.
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
from torch import nn

from benchmarks.conftest import EXTRAS, MEDIANS
from sgdwalk.instrument.batchnorm import measuring
from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout, segment_losses
from sgdwalk.training.models import build_model
from sgdwalk.instrument.segment import alpha_grid

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


def _setup(arch: str, channels: int, size: int, width: float) -> tuple[nn.Module, torch.Tensor, torch.Tensor, MeasurementSet]:
    torch.manual_seed(0)
    model = build_model(arch, channels, size, 10, width)
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    end = start + 0.01 * torch.randn_like(start)
    measurement = MeasurementSet(
        torch.randn(MEASUREMENT_SIZE, channels, size, size), torch.randint(0, 10, (MEASUREMENT_SIZE,)), chunk_size=CHUNK_SIZE
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


# Run in a fresh interpreter, so the allocator holds nothing from earlier benchmarks: the
# peak resident size during one segment measurement minus the peak before it.
_PEAK_MEMORY_SCRIPT = """
import resource, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from benchmarks.test_segment_speed import _setup, NUM_ALPHAS
from sgdwalk.instrument.measurement import segment_losses
from sgdwalk.instrument.segment import alpha_grid
model, start, end, measurement = _setup({arch!r}, {channels}, {size}, {width})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
segment_losses(model, start, end, alpha_grid(NUM_ALPHAS), measurement, "train")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024)
"""


def _peak_memory_mib(arch: str, channels: int, size: int, width: float) -> float:
    root = str(Path(__file__).resolve().parent.parent)
    script = _PEAK_MEMORY_SCRIPT.format(root=root, arch=arch, channels=channels, size=size, width=width)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("group", "arch", "channels", "size", "width"), MODELS, ids=[m[0] for m in MODELS])
@pytest.mark.parametrize("method", ["reference", "sgdwalk", "naive"])
def test_segment_measurement(
    benchmark: pytest.FixtureRequest, group: str, arch: str, channels: int, size: int, width: float, method: str
) -> None:
    model, start, end, measurement = _setup(arch, channels, size, width)
    grid = alpha_grid(NUM_ALPHAS)
    runs: dict[str, Callable[[], object]] = {
        "reference": lambda: _plain_forwards(model, measurement),
        "sgdwalk": lambda: segment_losses(model, start, end, grid, measurement, "train"),
        "naive": lambda: _naive(model, start, end, measurement),
    }
    benchmark.group = group  # type: ignore[attr-defined]
    benchmark.pedantic(runs[method], rounds=3, warmup_rounds=1)  # type: ignore[attr-defined]
    MEDIANS[group][method] = benchmark.stats.stats.median  # type: ignore[attr-defined]
    if method == "sgdwalk":
        EXTRAS[group]["peak memory (MiB)"] = f"{_peak_memory_mib(arch, channels, size, width):.1f}"
