"""The tracker's optional quantities (``step_quantities``): each record field is the instrument
function called directly at the same point, θ_{t+1}, bit for bit; switched on they leave the
training and every other field of the record as they were; off (the default) nothing is
computed and nothing written; and what cannot be measured is refused with its reason.

The loop trains a small tanh network with batch norm (measured in bn_mode "eval", where every
sample has its own gradient) by Adam, drawing minibatches from torch's global generator, so
any random number a quantity drew or any buffer it moved would change the trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from sgdwalk.instrument.curvature import hessian_trace, top_hessian_eigenvalues
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.gradient_noise import gradient_noise_scale
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.preconditioned_sharpness import (
    adam_stability_threshold,
    optimizer_preconditioner,
    preconditioned_sharpness,
    rmsprop_stability_threshold,
)
from sgdwalk.instrument.record import SCHEDULED_FIELDS, StepRecord
from sgdwalk.instrument.step_quantity_defaults import HESSIAN_TRACE_PROBES
from sgdwalk.instrument.tracker import WalkTracker
from tests.helpers import FLOAT64_REORDERED, assert_close, classification_data, mlp

STEPS = 5
LR = 0.05
TRAIN_SIZE, MEASURE_SIZE, BATCH = 48, 32, 8
SEED = 7
K = 3
EVERY = {"hessian_trace_every": 2, "gradient_noise_scale_every": 3, "top_eigenvalues_every": 2}
ALL_ON = {**EVERY, "top_eigenvalues_k": K, "preconditioned_sharpness_every": 1}


@dataclass
class Run:
    records: list[StepRecord]
    state: dict[str, torch.Tensor]
    rng_state: torch.Tensor
    # Per step, the instrument functions' values at θ_{t+1}, computed by the loop right after the step.
    expected: list[dict[str, Any]] = field(default_factory=list)


def direct_values(model: nn.Module, measurement: MeasurementSet, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Every quantity at the model's current parameters, by the instrument functions themselves."""
    point = flat_parameters(model)
    trace = hessian_trace(
        model, point, measurement, probes=HESSIAN_TRACE_PROBES, seed=SEED, method="hutch++", bn_mode="eval"
    )
    noise = gradient_noise_scale(model, point, measurement, bn_mode="eval")
    top = top_hessian_eigenvalues(model, point, measurement, K, bn_mode="eval", seed=SEED)
    preconditioner = optimizer_preconditioner(optimizer, model)
    adaptive = preconditioned_sharpness(model, point, measurement, preconditioner, bn_mode="eval", seed=SEED)
    beta1 = optimizer.param_groups[0]["betas"][0]
    return {
        "hessian_trace": trace.value,
        "hessian_trace_se": trace.standard_error,
        "gradient_noise_scale": noise.b_simple,
        "gradient_noise_scale_se": noise.standard_error,
        "top_eigenvalues": tuple(float(value) for value in top.values),
        "preconditioned_sharpness": adaptive.value,
        "stability_threshold": adam_stability_threshold(LR, beta1),
    }


def train(settings: dict[str, Any] | None, *, with_expected: bool = False) -> Run:
    """STEPS Adam steps, tracked with ``settings`` (None: untracked)."""
    torch.manual_seed(0)
    model = mlp(0, batchnorm=True, dropout=0.2)
    inputs, targets = classification_data(0, TRAIN_SIZE)
    measurement = MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE], chunk_size=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    tracker = (
        None
        if settings is None
        else WalkTracker(model, measurement, num_alphas=4, bn_mode="eval", sharpness_seed=SEED, **settings)
    )
    run = Run([], {}, torch.empty(0))
    model.train()
    for _ in range(STEPS):
        batch = torch.randint(0, TRAIN_SIZE, (BATCH,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs[batch]), targets[batch]).backward()
        if tracker is None:
            optimizer.step()
        else:
            with tracker.step(optimizer=optimizer):
                optimizer.step()
        if with_expected:
            with torch.random.fork_rng():
                run.expected.append(direct_values(model, measurement, optimizer))
    run.records = tracker.close() if tracker is not None else []
    run.state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    run.rng_state = torch.random.get_rng_state()
    return run


@pytest.fixture(scope="module")
def quantities_on() -> Run:
    return train(ALL_ON, with_expected=True)


@pytest.fixture(scope="module")
def quantities_off() -> Run:
    return train({})


def due(step: int, every: int) -> bool:
    return step % every == 0


def test_each_field_is_the_instrument_function_at_the_same_point(quantities_on: Run) -> None:
    for record, expected in zip(quantities_on.records, quantities_on.expected, strict=True):
        step = record.step
        trace_due, noise_due = due(step, EVERY["hessian_trace_every"]), due(step, EVERY["gradient_noise_scale_every"])
        top_due = due(step, EVERY["top_eigenvalues_every"])
        assert (record.hessian_trace, record.hessian_trace_se) == (
            (expected["hessian_trace"], expected["hessian_trace_se"]) if trace_due else (None, None)
        ), step
        assert (record.gradient_noise_scale, record.gradient_noise_scale_se) == (
            (expected["gradient_noise_scale"], expected["gradient_noise_scale_se"]) if noise_due else (None, None)
        ), step
        assert record.top_eigenvalues == (expected["top_eigenvalues"] if top_due else None), step
        assert record.preconditioned_sharpness == expected["preconditioned_sharpness"], step
        assert record.stability_threshold == expected["stability_threshold"]
        assert_close(record.stability_threshold, 38 / LR, FLOAT64_REORDERED, "Adam's threshold at beta1 0.9: 38/lr")
    assert [record.step for record in quantities_on.records] == list(range(STEPS))


def test_the_quantities_leave_training_and_the_other_fields_as_they_were(
    quantities_on: Run, quantities_off: Run
) -> None:
    untracked = train(None)
    for run in (quantities_on, quantities_off):
        assert run.state.keys() == untracked.state.keys()
        assert all(torch.equal(run.state[name], untracked.state[name]) for name in untracked.state)
        assert torch.equal(run.rng_state, untracked.rng_state), "a quantity moved torch's random stream"
    cleared = [StepRecord(**{**r.as_dict(), **dict.fromkeys(SCHEDULED_FIELDS)}) for r in quantities_on.records]
    assert cleared == quantities_off.records


def test_off_by_default_nothing_is_computed_or_written(quantities_off: Run) -> None:
    assert all(getattr(record, name) is None for record in quantities_off.records for name in SCHEDULED_FIELDS)
    assert all(not set(record.as_dict()) & SCHEDULED_FIELDS for record in quantities_off.records)


def test_rmsprops_threshold_is_two_over_its_rate() -> None:
    model = mlp(1)
    inputs, targets = classification_data(1, 16)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets), num_alphas=2, preconditioned_sharpness_every=1)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(inputs), targets).backward()
    with tracker.step(optimizer=optimizer):
        optimizer.step()
    (record,) = tracker.close()
    assert record.stability_threshold == rmsprop_stability_threshold(0.01) == 200.0
    point = flat_parameters(model)
    preconditioner = optimizer_preconditioner(optimizer, model)
    assert (
        record.preconditioned_sharpness
        == preconditioned_sharpness(model, point, tracker.measurement, preconditioner).value
    )


# ----------------------------------------------------------------------------- refusals
def small() -> tuple[nn.Module, MeasurementSet, torch.Tensor, torch.Tensor]:
    model = mlp(2)
    inputs, targets = classification_data(2, 16)
    return model, MeasurementSet(inputs, targets), inputs, targets


def test_the_gradient_noise_scale_is_refused_under_batch_norm_in_train_mode() -> None:
    model = mlp(2, batchnorm=True)
    measurement = MeasurementSet(*classification_data(2, 16))
    with pytest.raises(ValueError, match="needs per-sample gradients, which batch norm in bn_mode 'train'"):
        WalkTracker(model, measurement, gradient_noise_scale_every=1)
    WalkTracker(model, measurement, gradient_noise_scale_every=1, bn_mode="eval")  # every sample its own
    WalkTracker(mlp(2), measurement, gradient_noise_scale_every=1)  # no batch norm: train mode is fine


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hessian_trace_every": 0}, "hessian_trace_every must be positive or None, got 0"),
        ({"top_eigenvalues_every": -1}, "top_eigenvalues_every must be positive or None, got -1"),
        ({"preconditioned_sharpness_every": 0}, "preconditioned_sharpness_every must be positive"),
        ({"hessian_trace_every": 1, "hessian_trace_probes": 3}, "Hutch\\+\\+ needs at least 4 products, got 3"),
        ({"top_eigenvalues_k": 0}, "top_eigenvalues_k must be positive, got 0"),
    ],
)
def test_bad_settings_are_refused_at_construction(settings: dict[str, Any], message: str) -> None:
    model, measurement, _, _ = small()
    with pytest.raises(ValueError, match=message):
        WalkTracker(model, measurement, **settings)


def test_the_preconditioned_sharpness_refuses_sgd_at_the_first_step_and_at_attach() -> None:
    model, measurement, inputs, targets = small()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    before = flat_parameters(model)
    tracker = WalkTracker(model, measurement, preconditioned_sharpness_every=10)
    nn.functional.cross_entropy(model(inputs), targets).backward()
    with (
        pytest.raises(TypeError, match=r"needs Adam, AdamW or RMSprop .* not SGD: under SGD it is the plain sharpness"),
        tracker.step(optimizer=sgd),
    ):
        sgd.step()
    assert torch.equal(flat_parameters(model), before), "refused before the update"
    with (
        pytest.raises(ValueError, match=r"reads the optimizer's preconditioner: pass tracker.step\(optimizer="),
        tracker.step(lr=0.1),
    ):
        sgd.step()
    with pytest.raises(TypeError, match="not SGD"):
        tracker.attach(sgd)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: torch.optim.RMSprop(p, lr=0.1, momentum=0.9), "RMSprop with momentum has no stability threshold"),
        (
            lambda p: torch.optim.Adam([{"params": p[:2], "lr": 0.1}, {"params": p[2:], "lr": 0.2}]),
            "the parameter groups' lr differ",
        ),
    ],
)
def test_an_optimizer_without_one_threshold_is_refused(make: Any, message: str) -> None:
    model, measurement, inputs, targets = small()
    optimizer = make(list(model.parameters()))
    tracker = WalkTracker(model, measurement, preconditioned_sharpness_every=1)
    nn.functional.cross_entropy(model(inputs), targets).backward()
    with pytest.raises(ValueError, match=message), tracker.step(optimizer=optimizer):
        optimizer.step()
