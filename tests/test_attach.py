"""``tracker.attach(optimizer)``: the optimizer's step hooks give the records of ``with tracker.step()``.

The same seeded walk is trained three ways: untracked, with the ``with`` block and attached.
The attached records equal the ``with`` block's field by field (``==`` on floats: bitwise),
and the attached walk's parameters, buffers and random stream equal the untracked walk's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from sgdwalk.instrument.attach import learning_rate_of
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.schedule import windows
from sgdwalk.instrument.tracker import WalkTracker
from tests.helpers import classification_data, mlp

STEPS, BATCH, TRAIN_SIZE, MEASURE_SIZE = 8, 8, 48, 32
LR, MOMENTUM, WEIGHT_DECAY = 0.2, 0.9, 0.01
# Two windows and a gap: steps outside the schedule still pass through the hooks.
SCHEDULE = ((0, 3), (5, 7))


@dataclass
class Walk:
    model: nn.Module
    records: list[StepRecord]
    rng_state: torch.Tensor


Loop = Callable[[WalkTracker | None, torch.optim.Optimizer, torch.Tensor, Callable[[], None]], None]


def with_block(tracker: WalkTracker | None, optimizer: torch.optim.Optimizer, loss: torch.Tensor, _: object) -> None:
    assert tracker is not None
    with tracker.step(minibatch_loss=loss, lr=optimizer.param_groups[0]["lr"]):
        optimizer.step()


def attached(tracker: WalkTracker | None, optimizer: torch.optim.Optimizer, loss: torch.Tensor, _: object) -> None:
    assert tracker is not None
    tracker.note_loss(loss)
    optimizer.step()


def plain(tracker: WalkTracker | None, optimizer: torch.optim.Optimizer, loss: torch.Tensor, _: object) -> None:
    optimizer.step()


def walk(step: Callable[..., None], *, track: bool, attach: bool = False, seed: int = 0) -> Walk:
    torch.manual_seed(seed)
    model = mlp(seed, batchnorm=True, dropout=0.3)
    inputs, targets = classification_data(seed, TRAIN_SIZE)
    measurement = MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE], chunk_size=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    # A schedule that changes the learning rate at every step: the record's lr must follow it.
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)
    tracker = (
        WalkTracker(model, measurement, schedule=windows(list(SCHEDULE)), weight_decay=WEIGHT_DECAY, num_alphas=4)
        if track
        else None
    )
    attachment = tracker.attach(optimizer) if tracker is not None and attach else None
    model.train()
    for _ in range(STEPS):
        batch = torch.randint(0, TRAIN_SIZE, (BATCH,))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
        loss.backward()
        step(tracker, optimizer, loss, None)
        scheduler.step()
    if attachment is not None:
        attachment.remove()
    return Walk(model, tracker.close() if tracker is not None else [], torch.random.get_rng_state())


def test_attached_records_equal_the_with_block_records_bitwise() -> None:
    expected = walk(with_block, track=True)
    actual = walk(attached, track=True, attach=True)
    assert [r.step for r in expected.records] == [0, 1, 2, 5, 6]
    assert actual.records == expected.records  # dataclass equality: every float compared with ==
    assert len({r.lr for r in actual.records}) == len(actual.records), "the lr schedule reached the records"
    assert all(r.minibatch_loss is not None for r in actual.records)


def test_an_attached_tracker_leaves_training_bitwise_unchanged() -> None:
    untracked, tracked = walk(plain, track=False), walk(attached, track=True, attach=True)
    assert untracked.model.state_dict().keys() == tracked.model.state_dict().keys()
    for name, value in untracked.model.state_dict().items():
        assert torch.equal(value, tracked.model.state_dict()[name]), f"{name} differs with the attached tracker"
    assert torch.equal(untracked.rng_state, tracked.rng_state), "the attached tracker moved torch's random stream"


def _tiny() -> tuple[nn.Module, torch.optim.Optimizer, WalkTracker, torch.Tensor, torch.Tensor]:
    model = mlp(0)
    inputs, targets = classification_data(0, 16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer, WalkTracker(model, MeasurementSet(inputs, targets), num_alphas=2), inputs, targets


def _one_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(inputs), targets).backward()
    optimizer.step()


def test_remove_detaches_and_a_with_block_detaches_on_leaving() -> None:
    model, optimizer, tracker, inputs, targets = _tiny()
    with tracker.attach(optimizer):
        _one_step(model, optimizer, inputs, targets)
    _one_step(model, optimizer, inputs, targets)  # not measured
    assert [r.step for r in tracker.records] == [0]
    attachment = tracker.attach(optimizer)  # attachable again once detached
    _one_step(model, optimizer, inputs, targets)
    attachment.remove()
    attachment.remove()  # twice is harmless
    assert [r.step for r in tracker.records] == [0, 1]
    assert tracker.records[0].minibatch_loss is None, "no loss noted: none recorded"


def test_a_closed_tracker_lets_training_go_on_unmeasured() -> None:
    model, optimizer, tracker, inputs, targets = _tiny()
    tracker.attach(optimizer)
    _one_step(model, optimizer, inputs, targets)
    records = tracker.close()
    _one_step(model, optimizer, inputs, targets)
    assert len(records) == 1 and len(tracker.records) == 1


def test_attaching_twice_and_noting_a_loss_unattached_are_refused() -> None:
    _, optimizer, tracker, _, _ = _tiny()
    with pytest.raises(RuntimeError, match="note_loss is for a tracker attached"):
        tracker.note_loss(1.0)
    tracker.attach(optimizer)
    with pytest.raises(RuntimeError, match="already attached"):
        tracker.attach(optimizer)


def test_a_step_with_a_closure_is_refused_with_the_way_out() -> None:
    model, optimizer, tracker, inputs, targets = _tiny()
    tracker.attach(optimizer)

    def closure() -> float:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        return float(loss)

    with pytest.raises(RuntimeError, match=r"with tracker\.step"):
        optimizer.step(closure)


def test_a_failed_step_is_forgotten_and_the_next_one_measured() -> None:
    model, optimizer, tracker, inputs, targets = _tiny()
    tracker.attach(optimizer)

    def fail(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        raise FloatingPointError("the update failed")

    # Registered after the tracker's pre-hook: it runs once the tracker has begun the step.
    failing = optimizer.register_step_pre_hook(fail)
    with pytest.raises(FloatingPointError):
        _one_step(model, optimizer, inputs, targets)
    failing.remove()
    _one_step(model, optimizer, inputs, targets)
    assert [r.step for r in tracker.records] == [0], "the failed step took no step index"


def test_the_learning_rate_is_the_groups_common_one() -> None:
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    groups: list[dict[str, Any]] = [{"params": first.parameters()}, {"params": second.parameters()}]
    same = torch.optim.SGD(groups, lr=0.3)
    assert learning_rate_of(same) == 0.3
    groups = [{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.1}]
    differing = torch.optim.SGD(groups, lr=0.3)
    assert learning_rate_of(differing) is None, "two learning rates: the record cannot hold one"
