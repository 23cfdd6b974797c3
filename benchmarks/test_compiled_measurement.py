"""Does compiling the measurement forward pay? ``torch.compile`` against the tracker's own forward.

The measurement forward is one segment's losses over the measurement set at K = 10 points
(``segment_losses``, what the tracker runs at every measured step). Per model, side by side:

- reference: ``segment_losses`` as the tracker calls it, uncompiled (with the affine-input
  shortcut where the model declares one: the paper's MLP);
- compiled: the same call on a copy of the model compiled in place (``nn.Module.compile``,
  inductor), every point through the compiled forward. The shortcut cannot be compiled as it
  is (it stops a forward pass with an exception to capture the input layer's input, and
  Dynamo then leaves that frame to eager), so the compiled run evaluates every point in full;
- plain (MLP only): uncompiled without the shortcut, to tell what compiling gains from what
  the shortcut gains.

Compile time (the first call minus a steady call) is excluded from the medians and printed
beside them. Models: the paper's MLP (784-500-350-10, batch norm, 2,000 samples in chunks
of 1,000) and a small transformer encoder classifier (2 layers, width 128, 16 tokens, 256
samples in chunks of 128).

Measured (2-core CPU, shared, load about 4, one thread; three runs), compiled / reference:
MLP 1.82, 1.37, 1.32 (slower: the uncompiled shortcut beats a compiled full forward, which
itself is only 1.0-1.3x faster than the uncompiled full forward); transformer 1.75, 0.95,
0.93 (at best 1.08x faster). Compile time: about 6 s per model cold, 0.4-1.6 s with
inductor's on-disk cache warm. Compiling the measurement forward does not pay by
``COMPILE_PAYS_MARGIN`` on either model, so the instrument has no setting for it.
Run: ``pytest benchmarks/test_compiled_measurement.py --benchmark-only`` (about a minute).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

from benchmarks.conftest import EXTRAS, MEDIANS, remember
from benchmarks.test_tracked_step_memory import SmallTransformer
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, segment_losses
from sgdwalk.instrument.segment import alpha_grid
from sgdwalk.training.models import build_model

NUM_ALPHAS = 10
# Compiling is worth a setting only where it is this much faster (compiled / reference at most
# 1 / 1.2): below that the shared machine's ±30 % spread of a single comparison could make it.
COMPILE_PAYS_MARGIN = 1.2

MODELS = ("mlp", "transformer")


def _setup(name: str) -> tuple[nn.Module, MeasurementSet]:
    torch.manual_seed(0)
    if name == "mlp":
        inputs, targets = torch.randn(2_000, 1, 28, 28), torch.randint(0, 10, (2_000,))
        return build_model("mlp", 1, 28, 10), MeasurementSet(inputs, targets, chunk_size=1_000)
    model = SmallTransformer(vocabulary=1000, length=16, width=128, layers=2, classes=10)
    tokens, targets = torch.randint(0, 1000, (256, 16)), torch.randint(0, 10, (256,))
    return model, MeasurementSet(tokens, targets, chunk_size=128)


def _segment(model: nn.Module, measurement: MeasurementSet, *, shortcut: bool) -> Callable[[], NDArray[np.float64]]:
    start = flat_parameters(model)
    end = start + 0.01 * torch.randn(start.shape, generator=torch.Generator().manual_seed(1))
    grid = alpha_grid(NUM_ALPHAS)
    return lambda: segment_losses(model, start, end, grid, measurement, "train", exploit_affine_input=shortcut)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", ["reference", "compiled", "plain"])
def test_compiled_measurement(benchmark: BenchmarkFixture, name: str, method: str) -> None:
    if method == "plain" and name != "mlp":
        pytest.skip("only the MLP has an affine-input shortcut to leave out")
    model, measurement = _setup(name)
    if method == "compiled":
        model = copy.deepcopy(model)
        model.compile()
    run = _segment(model, measurement, shortcut=method == "reference")
    group = f"compiled-measurement-{name}"
    began = time.perf_counter()
    run()  # compiles (method "compiled"); warms the allocator otherwise
    first = time.perf_counter() - began
    benchmark.group = group
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    remember(benchmark, group, method)
    if method == "compiled":
        EXTRAS[group]["compile time, s"] = f"{first - MEDIANS[group][method]:.1f}"
    medians = MEDIANS[group]
    if "reference" in medians and "compiled" in medians:
        speedup = medians["reference"] / medians["compiled"]
        EXTRAS[group]["pays (>= margin)"] = f"{speedup:.2f}x faster: {speedup >= COMPILE_PAYS_MARGIN}"
