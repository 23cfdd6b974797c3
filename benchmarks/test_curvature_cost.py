"""What each optional per-step quantity costs, in training steps of the default MLP.

Setting: the default walk's network (``WalkConfig()``: the paper's MLP 784-500-350-10 with
batch norm, ReLU) after 50 SGD steps (lr 0.1, batch 100) on 1,000 Fashion-MNIST images,
which are also the measurement set (the default ``measurement_size``), measured in bn_mode
"eval" (the gradient noise scale needs per-sample gradients). Side by side in one run, each
quantity once, as the tracker computes it at a scheduled step:

- reference: one SGD training step at batch 100 (forward, backward, update; median of 20);
- sharpness: ``sharpness_with_standard_error`` (the record's sharpness and its error);
- hessian_trace: Hutch++ with ``HESSIAN_TRACE_PROBES`` products;
- gradient_noise_scale: per-sample gradients in chunks of ``NOISE_CHUNK`` (what
  ``--hvp-chunk-size`` sets; the default chunk of 1,024 would hold 1,000 × 570k floats);
- top_eigenvalues: the ``TOP_EIGENVALUES_K`` largest by Lanczos to 1e-6;
- preconditioned_sharpness: with the preconditioner of Adam after 20 steps from that point.

The ratios are printed (no goal: they say what scheduling a quantity costs). Neither PyHessian
nor curvlinops is installed in the bench environment, so there is no comparison with theirs.
Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

from benchmarks.conftest import EXTRAS, MEDIANS
from sgdwalk.instrument.curvature import hessian_trace, top_hessian_eigenvalues
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.gradient_noise import gradient_noise_scale
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.preconditioned_sharpness import optimizer_preconditioner, preconditioned_sharpness
from sgdwalk.instrument.sharpness import sharpness_with_standard_error
from sgdwalk.instrument.step_quantity_defaults import HESSIAN_TRACE_PROBES, TOP_EIGENVALUES_K
from sgdwalk.training.config import DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_MEASUREMENT_SIZE, WalkConfig
from sgdwalk.training.data import DatasetNotFoundError, load_tensors
from sgdwalk.training.models import build_model

GROUP = "curvature-cost"
SGD_STEPS = 50  # a trained point, away from the initialisation's Hessian
ADAM_STEPS = 20  # enough for Adam's second moments to be more than their first gradients
ADAM_LR = 1e-3
TRAINING_STEP_REPEATS = 20
# Per-sample gradients of 100 images: 100 × 570k float32 ≈ 230 MB at a time.
NOISE_CHUNK = 100


def _setting() -> tuple[nn.Module, MeasurementSet, torch.Tensor, torch.Tensor]:
    try:
        data = load_tensors("fashion-mnist", "train", subset=DEFAULT_MEASUREMENT_SIZE)
    except DatasetNotFoundError as error:
        pytest.skip(f"Fashion-MNIST not found: {error}")
    config = WalkConfig()
    torch.manual_seed(0)
    model = build_model(config.arch, 1, 28, 10, batch_norm=config.batch_norm, activation=config.activation)
    return model, MeasurementSet(data.inputs, data.targets, chunk_size=config.chunk_size), data.inputs, data.targets


def _sgd_steps(
    model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor, steps: int
) -> list[float]:
    """``steps`` minibatch steps; the seconds each took."""
    generator = torch.Generator().manual_seed(1)
    seconds = []
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, inputs.shape[0], (DEFAULT_BATCH_SIZE,), generator=generator)
        began = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(inputs[batch]), targets[batch]).backward()
        optimizer.step()
        seconds.append(time.perf_counter() - began)
    return seconds


def _timed(compute: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = compute()
    return time.perf_counter() - began, result


def test_each_quantity_against_a_training_step(benchmark: BenchmarkFixture) -> None:
    model, measurement, inputs, targets = _setting()
    _sgd_steps(model, torch.optim.SGD(model.parameters(), lr=DEFAULT_LR), inputs, targets, SGD_STEPS)
    adam_model = copy.deepcopy(model)
    adam = torch.optim.Adam(adam_model.parameters(), lr=ADAM_LR)
    _sgd_steps(adam_model, adam, inputs, targets, ADAM_STEPS)
    point, adam_point = flat_parameters(model), flat_parameters(adam_model)
    preconditioner = optimizer_preconditioner(adam, adam_model)
    quantities: dict[str, Callable[[], Any]] = {
        "sharpness": lambda: sharpness_with_standard_error(model, point, measurement, bn_mode="eval"),
        "hessian_trace": lambda: hessian_trace(
            model, point, measurement, probes=HESSIAN_TRACE_PROBES, method="hutch++", bn_mode="eval"
        ),
        "gradient_noise_scale": lambda: gradient_noise_scale(
            model, point, measurement.chunked(NOISE_CHUNK), bn_mode="eval"
        ),
        "top_eigenvalues": lambda: top_hessian_eigenvalues(
            model, point, measurement, TOP_EIGENVALUES_K, bn_mode="eval"
        ),
        "preconditioned_sharpness": lambda: preconditioned_sharpness(
            adam_model, adam_point, measurement, preconditioner, bn_mode="eval"
        ),
    }
    seconds: dict[str, float] = {}
    results: dict[str, Any] = {}

    def one_round() -> None:
        trained = copy.deepcopy(model)  # the point the quantities are measured at stays where it is
        training = _sgd_steps(
            trained, torch.optim.SGD(trained.parameters(), lr=DEFAULT_LR), inputs, targets, TRAINING_STEP_REPEATS
        )
        seconds["reference"] = statistics.median(training)
        for name, compute in quantities.items():
            seconds[name], results[name] = _timed(compute)

    benchmark.pedantic(one_round, rounds=1, warmup_rounds=0)
    training_step = seconds["reference"]
    products = {
        "sharpness": results["sharpness"].products,
        "hessian_trace": results["hessian_trace"].products,
        "top_eigenvalues": results["top_eigenvalues"].products,
        "preconditioned_sharpness": results["preconditioned_sharpness"].products,
    }
    for name, spent in seconds.items():
        MEDIANS[GROUP][name] = spent
        if name == "reference":
            continue
        ratio = spent / training_step
        benchmark.extra_info[f"{name}_in_training_steps"] = ratio
        detail = f", {products[name]} Hessian-vector products" if name in products else ""
        EXTRAS[GROUP][f"{name}: cost"] = f"{ratio:.0f} training steps{detail}"
        print(f"{name}: {spent:.2f} s = {ratio:.0f} training steps{detail}")
    noise = results["gradient_noise_scale"]
    print(
        f"values: sharpness {results['sharpness'].value:.4g}, trace {results['hessian_trace'].value:.4g} "
        f"± {results['hessian_trace'].standard_error:.2g}, B_simple {noise.b_simple:.4g} ± {noise.standard_error:.2g}, "
        f"top {tuple(round(float(v), 3) for v in results['top_eigenvalues'].values)}, "
        f"preconditioned {results['preconditioned_sharpness'].value:.4g}"
    )
    benchmark.extra_info["training_step_seconds"] = training_step
