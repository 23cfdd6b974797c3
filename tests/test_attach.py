"""``tracker.attach(optimizer)``: the optimizer's step hooks give the records of ``with tracker.step()``.

The same seeded walk is trained three ways: untracked, with the ``with`` block and attached.
The attached records equal the ``with`` block's field by field (``==`` on floats: bitwise),
and the attached walk's parameters, buffers and random stream equal the untracked walk's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from sgdwalk.instrument.attach import begin_once_the_gradient_is_made, learning_rate_of
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.schedule import windows
from sgdwalk.instrument.tracker import WalkTracker
from tests.helpers import classification_data, mlp

STEPS, BATCH, TRAIN_SIZE, MEASURE_SIZE = 8, 8, 48, 32
LR, MOMENTUM, WEIGHT_DECAY = 0.2, 0.9, 0.01
# Two windows and a gap: steps outside the schedule still pass through the hooks.
SCHEDULE = ((0, 3), (5, 7))
# The tracker's loss at θ_t against a forward pass outside it: the same float32 arithmetic on
# one chunk, up to the order of the mean's summation.
LOSS_REFERENCE_RTOL = 1e-6


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
    with pytest.raises(ValueError, match=r"attach\(optimizer, step=N\)"):
        tracker.attach(optimizer)  # it cannot count the step it did not see
    attachment = tracker.attach(optimizer, step=2)  # attachable again once detached
    _one_step(model, optimizer, inputs, targets)
    attachment.remove()
    attachment.remove()  # twice is harmless
    assert [r.step for r in tracker.records] == [0, 2], "records carry the optimizer's step numbers"
    assert tracker.records[0].minibatch_loss is None, "no loss noted: none recorded"


def _measurement_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """The loss at the model's parameters on the whole set, computed apart from the tracker."""
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(inputs), targets))


def test_after_a_gap_the_walk_is_measured_afresh_with_no_cosine_across_it() -> None:
    """attach, 3 steps, remove, 3 unmeasured steps, attach again at step 6, 2 steps: the first
    record after the gap measures θ_6 itself (not θ_3's carried loss) and pairs no gradients
    across the gap; the next record has its cosine again."""
    model, optimizer, tracker, inputs, targets = _tiny()
    attachment = tracker.attach(optimizer)
    for _ in range(3):
        _one_step(model, optimizer, inputs, targets)
    attachment.remove()
    for _ in range(3):
        _one_step(model, optimizer, inputs, targets)
    loss_at_6 = _measurement_loss(model, inputs, targets)
    with tracker.attach(optimizer, step=6):
        for _ in range(2):
            _one_step(model, optimizer, inputs, targets)
    by_step = {record.step: record for record in tracker.records}
    assert sorted(by_step) == [0, 1, 2, 6, 7]
    assert by_step[6].cosine is None, "no cosine pairs gradients four updates apart"
    assert by_step[6].update_cosine is None, "nor updates"
    assert by_step[6].loss_start != by_step[2].loss_end
    assert by_step[6].loss_start == pytest.approx(loss_at_6, rel=LOSS_REFERENCE_RTOL)
    assert by_step[7].cosine is not None and by_step[7].update_cosine is not None
    assert by_step[7].loss_start == by_step[6].loss_end


def test_a_step_the_with_block_did_not_see_breaks_the_chain_too() -> None:
    model, optimizer, tracker, inputs, targets = _tiny()
    for plain_step in (False, False, True, False):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        if plain_step:
            optimizer.step()  # outside the tracker: the model moves unseen
            continue
        with tracker.step(lr=0.1):
            optimizer.step()
    first, second, after_gap = tracker.records
    assert second.cosine is not None and second.loss_start == first.loss_end
    assert after_gap.cosine is None and after_gap.loss_start != second.loss_end


def test_attaching_a_closed_tracker_and_a_with_block_inside_an_attached_step_are_refused() -> None:
    model, optimizer, tracker, inputs, targets = _tiny()
    tracker.attach(optimizer)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(inputs), targets).backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"already measure optimizer\.step"), tracker.step(lr=0.1):
        optimizer.step()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)), "refused before the update"
    # No step reached the hooks: said at close (an optimizer updating in methods of its own, a
    # SAM's first_step and second_step, gave no records without a word).
    with pytest.warns(UserWarning, match=r"attached to SGD, whose step\(\) was never called"):
        assert tracker.close() == []
    # Also where the attachment was removed before close (a context manager, a callback's end).
    _, optimizer, tracker, _, _ = _tiny()
    with tracker.attach(optimizer):
        pass
    with pytest.warns(UserWarning, match="was never called"):
        tracker.close()
    _, other_optimizer, closed, _, _ = _tiny()
    closed.close()
    with pytest.raises(RuntimeError, match="tracker is closed"):
        closed.attach(other_optimizer)


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


def test_a_closures_gradient_is_read_when_the_closure_returns() -> None:
    """The helper the Lightning callback's pre-hook uses: ``begin`` after the closure's first
    call (the gradient made), never before it, once; without a closure, at once."""
    events: list[str] = []

    def closure() -> float:
        events.append("closure")
        return 1.0

    def begin() -> None:
        events.append("begin")

    optimizer = object()
    assert begin_once_the_gradient_is_made((optimizer,), {}, begin) is None and events == ["begin"]
    for args, kwargs in [((optimizer, closure), {}), ((optimizer,), {"closure": closure})]:
        events.clear()
        changed = begin_once_the_gradient_is_made(args, kwargs, begin)
        assert changed is not None and events == [], "begun before the closure made the gradient"
        new_args, new_kwargs = changed
        wrapped = new_args[1] if len(new_args) > 1 else new_kwargs["closure"]
        assert new_args[0] is optimizer and wrapped() == 1.0 and wrapped() == 1.0
        assert events == ["closure", "begin", "closure"]


def test_a_closure_step_in_a_with_block_records_the_gradient_made_before_it() -> None:
    # The pattern the README gives for optimizer.step(closure): the gradient at θ_t is made by
    # one call of the closure before the block. Without that call the block read the last
    # step's line-search gradient (found by a second pair of eyes on LBFGS).
    model, _, tracker, inputs, targets = _tiny()
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        return loss

    gradients = []
    for _ in range(3):
        loss = closure()
        gradients.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).double())
        with tracker.step(minibatch_loss=loss, optimizer=optimizer):
            optimizer.step(closure)
    records = tracker.close()
    # The tracker's float32 vector against the same gradient widened to float64 here.
    assert [r.grad_norm for r in records] == pytest.approx([float(g.norm()) for g in gradients], rel=1e-6)
    expected = float(gradients[2] @ gradients[1] / (gradients[2].norm() * gradients[1].norm()))
    assert records[2].cosine == pytest.approx(expected, rel=1e-6)


def scaled_backward(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    data: tuple[torch.Tensor, torch.Tensor],
    step: int,
    skipped: int,
) -> None:
    """Step ``step``'s minibatch backward through the scaler; at ``skipped`` one gradient entry
    is made infinite, so the scaler skips that update."""
    inputs, targets = data
    batch = slice((step * BATCH) % TRAIN_SIZE, (step * BATCH) % TRAIN_SIZE + BATCH)
    optimizer.zero_grad()
    scaler.scale(nn.functional.cross_entropy(model(inputs[batch]), targets[batch])).backward()
    if step == skipped:
        next(model.parameters()).grad[0, 0] = float("inf")  # type: ignore[index]


@pytest.mark.parametrize("attached", [True, False], ids=["attach", "with-block-unscaled-first"])
def test_a_step_a_grad_scaler_skips_is_no_step_attached_and_pairs_no_cosine(attached: bool) -> None:
    # torch.amp.GradScaler skips optimizer.step() where the unscaled gradient is not finite.
    # Attached, the hooks see the updates made: the skipped step is no step, and the cosine
    # after it pairs the gradients of the updates on either side. In a with block (after
    # scaler.unscale_, so the gradient read is the one the update uses) it is a step of length
    # 0 whose infinite gradient pairs no cosine, not NaN.
    torch.manual_seed(0)
    model = mlp(0)
    inputs, targets = classification_data(0, TRAIN_SIZE)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    tracker = WalkTracker(model, MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE]), num_alphas=2)
    if attached:
        tracker.attach(optimizer)
    skipped, used = 2, []
    for step in range(5):
        scaled_backward(model, optimizer, scaler, (inputs, targets), step, skipped)
        scaler.unscale_(optimizer)
        if step != skipped:
            used.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).double())
        if attached:
            scaler.step(optimizer)
        else:
            with tracker.step(optimizer=optimizer):
                scaler.step(optimizer)
        scaler.update()
    records = tracker.close()

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ b / (a.norm() * b.norm()))

    # The tracker's float32 gradient against the same gradient widened here.
    if attached:
        assert [r.step for r in records] == [0, 1, 2, 3]
        assert [r.grad_norm for r in records] == pytest.approx([float(g.norm()) for g in used], rel=1e-6)
        assert records[2].cosine == pytest.approx(cos(used[1], used[2]), rel=1e-6)
    else:
        assert [r.step for r in records] == [0, 1, 2, 3, 4]
        assert records[skipped].grad_norm == math.inf and records[skipped].step_length == 0.0
        assert records[skipped].cosine is None and records[skipped + 1].cosine is None
        assert records[skipped + 2].cosine == pytest.approx(cos(used[2], used[3]), rel=1e-6)


FUSED_WEIGHT_DECAY = 0.05
FUSED = {
    # SGD's decay is coupled: the gradient the update uses is g/scale + wd·θ, the scale taken
    # off first, as the fused kernel does.
    "fused SGD": (
        lambda model: torch.optim.SGD(model.parameters(), lr=LR, weight_decay=FUSED_WEIGHT_DECAY, fused=True),
        FUSED_WEIGHT_DECAY,
    ),
    "fused AdamW": (
        lambda model: torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=FUSED_WEIGHT_DECAY, fused=True),
        0.0,
    ),
}


@pytest.mark.parametrize("case", list(FUSED))
def test_a_fused_optimizer_under_a_grad_scaler_is_read_unscaled_and_its_skipped_step_is_no_step(case: str) -> None:
    # A fused optimizer takes the scaler's scale off inside its own step (GradScaler.step hands it
    # grad_scale and found_inf instead of unscaling first): the hooks read gradients still scaled,
    # and grad_norm was recorded 1024 times too large (found by trying fused AdamW under a scaler).
    # Its step with a non-finite gradient runs and moves nothing: no step, as the scaler's skip of
    # a plain optimizer is.
    make, decay = FUSED[case]
    torch.manual_seed(0)
    model = mlp(0)
    inputs, targets = classification_data(0, TRAIN_SIZE)
    optimizer = make(model)
    assert getattr(optimizer, "_step_supports_amp_scaling", False), "the case needs an optimizer that unscales itself"
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    tracker = WalkTracker(model, MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE]), num_alphas=2)
    tracker.attach(optimizer)
    skipped, used = 2, []
    for step in range(5):
        scaled_backward(model, optimizer, scaler, (inputs, targets), step, skipped)
        if step != skipped:
            # By hand, in float64: the scale off, then the coupled decay on.
            scale = float(scaler.get_scale())
            pieces = []
            for p in model.parameters():
                assert p.grad is not None
                pieces.append((p.grad.double() / scale + decay * p.detach().double()).reshape(-1))
            used.append(torch.cat(pieces))
        scaler.step(optimizer)  # no unscale_ first: the fused kernel unscales
        scaler.update()
    records = tracker.close()

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ b / (a.norm() * b.norm()))

    assert [r.step for r in records] == [0, 1, 2, 3]
    assert [r.grad_norm for r in records] == pytest.approx([float(g.norm()) for g in used], rel=1e-6)
    assert records[2].cosine == pytest.approx(cos(used[1], used[2]), rel=1e-6)
    assert records[3].cosine == pytest.approx(cos(used[2], used[3]), rel=1e-6)


def test_an_edit_after_an_attached_step_is_said_once_and_taken_as_a_gap() -> None:
    # A pruning mask kept after every step: each step then starts where the last did not end,
    # and had no cosine, silently (found by a second pair of eyes). The gap rule stays (the
    # segment and cosines are of the optimizer's update); the tracker now says so, once.
    model, optimizer, tracker, inputs, targets = _tiny()
    tracker.attach(optimizer)
    first = next(model.parameters())
    mask = (torch.arange(first.numel()) % 2).reshape(first.shape).to(first.dtype)
    with pytest.warns(UserWarning, match=r"step 1: the parameters changed after the optimizer's last step") as said:
        for _ in range(4):
            _one_step(model, optimizer, inputs, targets)
            with torch.no_grad():
                first.mul_(mask)
    assert len(said) == 1
    assert [record.cosine for record in tracker.close()] == [None] * 4
