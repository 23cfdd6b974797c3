"""``update_cosine``: the cosine of consecutive updates θ_{t+1} − θ_t, beside the gradient cosine.

Under plain SGD the update is −η g_t, so both cosines agree (up to θ's float32 rounding);
under momentum or Adam the update is not along the gradient and they differ. The reference is
made by hand from float64 copies of θ taken around every step.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.schedule import windows
from sgdwalk.instrument.tracker import WalkTracker
from tests.helpers import FLOAT32_VECTOR_VS_FLOAT64, Tolerance, assert_close, classification_data, mlp

STEPS, BATCH, TRAIN_SIZE = 8, 8, 32
LR, MOMENTUM = 0.1, 0.9
# Steps 0-2 and 5-6 measured, 3-4 not: a window's first step still pairs with the step before it.
SCHEDULE = [(0, 3), (5, 7)]

# θ_{t+1} = θ_t − η g_t is rounded to float32, so the update is −η g_t only to ~eps·|θ|/|η g|
# per element (θ ~ 0.5, η g ~ 1e-2 here: ~3e-6), which the cosine inherits.
UPDATE_VS_GRADIENT = Tolerance(0.0, 1e-4, "θ rounded to float32 after each step: ~eps·|θ|/|ηg| ≈ 3e-6 per element")

Factory = Callable[[nn.Module], torch.optim.Optimizer]


def walk(make: Factory) -> tuple[list[StepRecord], list[torch.Tensor]]:
    """The attached walk's records, and θ_0 … θ_STEPS in float64 taken by hand."""
    model = mlp(0)
    inputs, targets = classification_data(0, TRAIN_SIZE)
    optimizer = make(model)
    tracker = WalkTracker(model, MeasurementSet(inputs[:16], targets[:16]), schedule=windows(SCHEDULE), num_alphas=2)
    tracker.attach(optimizer)
    generator = torch.Generator().manual_seed(0)
    thetas = [torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])]
    for _ in range(STEPS):
        batch = torch.randint(0, TRAIN_SIZE, (BATCH,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs[batch]), targets[batch]).backward()
        optimizer.step()
        thetas.append(torch.cat([p.detach().double().reshape(-1) for p in model.parameters()]))
    return tracker.close(), thetas


def hand_update_cosine(thetas: list[torch.Tensor], step: int) -> float:
    before, now = thetas[step] - thetas[step - 1], thetas[step + 1] - thetas[step]
    return float(before @ now / (before.norm() * now.norm()))


def test_under_plain_sgd_the_update_cosine_is_the_gradient_cosine() -> None:
    records, _ = walk(lambda model: torch.optim.SGD(model.parameters(), lr=LR))
    assert [r.step for r in records] == [0, 1, 2, 5, 6]
    assert records[0].update_cosine is None and records[0].cosine is None
    with_cosine = records[1:]
    assert all(r.update_cosine is not None for r in with_cosine), "a window's first step pairs with the step before"
    assert_close([r.update_cosine for r in with_cosine], [r.cosine for r in with_cosine], UPDATE_VS_GRADIENT)


@pytest.mark.parametrize(
    "make",
    [
        lambda model: torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM),
        lambda model: torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01),
    ],
    ids=["momentum", "adamw"],
)
def test_under_momentum_and_adam_the_update_cosine_is_the_updates_not_the_gradients(make: Factory) -> None:
    records, thetas = walk(make)
    with_cosine = [r for r in records if r.step > 0]
    expected = [hand_update_cosine(thetas, r.step) for r in with_cosine]
    assert_close([r.update_cosine for r in with_cosine], expected, FLOAT32_VECTOR_VS_FLOAT64, "update cosine")
    gaps = [
        abs(r.update_cosine - r.cosine) for r in with_cosine if r.update_cosine is not None and r.cosine is not None
    ]
    assert max(gaps) > 0.1, "updates and gradients point alike: the two cosines did not tell them apart"
