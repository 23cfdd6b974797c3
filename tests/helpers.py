"""Shared test helpers: named tolerances, a comparison that names them, tiny models and data.

Every tolerance the unit tests use lives here with the reason for its value, so loosening one
(say for a GPU run) is a deliberate edit in one place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout
from sgdwalk.instrument.schedule import MeasurementSchedule

# The unit tests' tensors are tiny: a second intra-op thread only adds hand-offs, and on a
# shared 2-core machine its spin-waits made batch norm 60x slower (15 ms vs 0.25 ms a call).
torch.set_num_threads(1)


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    reason: str


# Two float64 computations of the same quantity that differ only in summation order.
FLOAT64_REORDERED = Tolerance(1e-12, 1e-12, "float64 sums in another order: a few ulps of 2^-52 per term")

# float64 divided differences of values of size O(1..1e3): cancellation costs ~1e3 ulps.
FLOAT64_DIVIDED_DIFFERENCES = Tolerance(1e-9, 1e-9, "divided differences cancel ~3 digits of float64")

# float32 forward passes over batches of different shapes (matmul blocking changes the order
# of the sums): ~1e-7 relative per operation, a few layers deep.
FLOAT32_REORDERED = Tolerance(1e-5, 1e-6, "float32 network re-run with another batch shape: ~1e-7 per op, few ops")

# A float32 vector (a gradient, with weight decay added in float32) against the same vector
# made by hand in float64: one float32 rounding per element, ~6e-8 relative.
FLOAT32_VECTOR_VS_FLOAT64 = Tolerance(1e-6, 1e-9, "one float32 rounding per element against float64: ~6e-8")

# Lanczos stops once its residual is below SHARPNESS_RELATIVE_ERROR (1e-6) of the value, which
# bounds the value's error by the same; docs/definitions.md#sharpness asks 1e-6 of a float64 estimate.
LANCZOS_VS_DENSE = Tolerance(1e-6, 1e-9, "Lanczos residual <= 1e-6 of the value against eigvalsh; the suite asks 1e-6")

# Two Lanczos runs from different random starts both converge to within their tolerance.
LANCZOS_SEED_TO_SEED = Tolerance(1e-6, 1e-9, "two converged Lanczos runs each within their 1e-6 residual bound")


def assert_close(actual: object, expected: object, tolerance: Tolerance, what: str = "") -> None:
    """np.testing.assert_allclose in float64 whose failure message names the tolerance used."""
    np.testing.assert_allclose(
        np.asarray(_as_numpy(actual), dtype=np.float64),
        np.asarray(_as_numpy(expected), dtype=np.float64),
        rtol=tolerance.rtol,
        atol=tolerance.atol,
        err_msg=f"{what} (tolerance: {tolerance.reason})",
    )


def _as_numpy(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return value


# --------------------------------------------------------------------------- models and data
def mlp(
    seed: int,
    *,
    inputs: int = 4,
    hidden: int = 6,
    classes: int = 3,
    batchnorm: bool = False,
    dropout: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """A two-layer tanh network, optionally with BatchNorm1d and Dropout after the hidden layer."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(inputs, hidden)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(hidden))
    layers.append(nn.Tanh())
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, classes))
    model = nn.Sequential(*layers).to(dtype)
    torch.random.set_rng_state(generator_state)  # building a model must not move the caller's stream
    return model


def classification_data(
    seed: int, size: int, *, inputs: int = 4, classes: int = 3, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, inputs, generator=generator, dtype=dtype)
    y = torch.randint(0, classes, (size,), generator=generator)
    return x, y


def warm_batchnorm(model: nn.Module, inputs: torch.Tensor, steps: int = 3) -> None:
    """Give the running statistics values far from their (0, 1) initialisation."""
    training = model.training
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(inputs * 2.0 + 1.0)
    model.train(training)


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters, buffers and gradients, cloned (to compare bitwise later)."""
    snapshot = {f"state:{name}": value.detach().clone() for name, value in model.state_dict().items()}
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            snapshot[f"grad:{name}"] = parameter.grad.detach().clone()
    return snapshot


def assert_same_state(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), f"{name} changed"


def training_flags(model: nn.Module) -> list[tuple[str, bool]]:
    return [(name, module.training) for name, module in model.named_modules()]


# ------------------------------------------------------------------- independent references
def model_at(model: nn.Module, point: torch.Tensor) -> nn.Module:
    """A deep copy of ``model`` holding the flat parameter vector ``point``."""
    layout = ParameterLayout.of(model)
    copied = copy.deepcopy(model)
    with torch.no_grad():
        for name, value in layout.unflatten(point.detach().clone()).items():
            copied.get_parameter(name).copy_(value)
    return copied


def naive_mean_loss(model: nn.Module, measurement: MeasurementSet, *, batchnorm_train: bool) -> float:
    """Plain forward passes chunk by chunk, mean loss in float64; dropout always off.

    With ``batchnorm_train`` the batch-norm layers of ``model`` (a throwaway copy) normalise by
    chunk statistics and update their own running statistics, which is harmless here.
    """
    model.eval()
    if batchnorm_train:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, targets in measurement.chunks():
            losses = measurement.loss_fn(model(inputs), targets)
            total += float(losses.double().sum())
            count += int(losses.shape[0])
    return total / count


def recomputed_statistics_model(model: nn.Module, point: torch.Tensor, measurement: MeasurementSet) -> nn.Module:
    """The reference for "recompute": reset the statistics, cumulative average over all chunks."""
    copied = model_at(model, point)
    copied.eval()
    for module in copied.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
            module.train()
    with torch.no_grad():
        for inputs, _ in measurement.chunks():
            copied(inputs)
    return copied.eval()


def mean_loss_function(
    model: nn.Module,
    measurement: MeasurementSet,
    buffers: dict[str, torch.Tensor] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """θ ↦ mean loss over the set via functional_call (for dense autograd Hessians)."""
    layout = ParameterLayout.of(model)
    extra = buffers or {}

    def loss(flat: torch.Tensor) -> torch.Tensor:
        total = flat.new_zeros(())
        for inputs, targets in measurement.chunks():
            outputs = functional_call(model, {**layout.unflatten(flat), **extra}, (inputs,))
            total = total + measurement.loss_fn(outputs, targets).sum()
        return total / measurement.size

    return loss


def measured_steps(schedule: MeasurementSchedule, steps: int) -> list[int]:
    return [step for step in range(steps) if schedule(step)]


def linear_layer(model: nn.Module, index: int) -> nn.Linear:
    """``model[index]`` of a Sequential, checked to be a Linear (indexing types it as any Module)."""
    assert isinstance(model, nn.Sequential), type(model).__name__
    layer = model[index]
    assert isinstance(layer, nn.Linear), type(layer).__name__
    return layer
