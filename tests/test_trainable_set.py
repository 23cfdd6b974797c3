"""A change of the trainable parameters during a run is refused before the optimizer moves
anything, and a model whose trainable parameters mix dtypes is refused when the tracker is made.

Before this check, a fine-tuning schedule that froze one layer and unfroze another of the same
shape at step 3 gave records with every shape right and the distance from init taken between
the two layers' weights: 0.06 at step 2, then 3.29 at step 3, silently.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.schedule import windows
from sgdwalk.instrument.tracker import WalkTracker

CHANGE_AT, STEPS, BATCH = 3, 6, 16


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(64, 8, generator=generator), torch.randint(0, 8, (64,), generator=generator)


def _model() -> nn.Sequential:
    torch.manual_seed(1)
    # Two hidden layers of one shape, so that a swap of which one trains keeps every vector's length.
    return nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))


def _set_trainable(module: nn.Module, trainable: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(trainable)


def _minibatch_backward(model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> torch.Tensor:
    inputs, targets = _data()
    rows = slice((step * BATCH) % 64, (step * BATCH) % 64 + BATCH)
    optimizer.zero_grad()
    dtype = next(model.parameters()).dtype  # float64 once the model is widened
    loss = F.cross_entropy(model(inputs[rows].to(dtype)), targets[rows])
    loss.backward()
    return loss


def _tracker(model: nn.Module, start_step: int = 0) -> WalkTracker:
    inputs, targets = _data()
    return WalkTracker(model, MeasurementSet(inputs[:32], targets[:32]), start_step=start_step)


def _swap(model: nn.Sequential) -> None:
    """Freeze the first hidden layer and unfreeze the second: a fine-tuning schedule's step."""
    _set_trainable(model[0], False)
    _set_trainable(model[2], True)


def _unfreeze(model: nn.Sequential) -> None:
    _set_trainable(model[2], True)


def _replace(model: nn.Sequential) -> None:
    """A new head of the same shape, as re-initializing a classifier does."""
    model[4] = nn.Linear(8, 8)


def _widen(model: nn.Sequential) -> None:
    model.double()


CHANGES = {
    "swap": (_swap, "now trainable: 2.weight, 2.bias; no longer trainable: 0.weight, 0.bias"),
    "unfreeze": (_unfreeze, "now trainable: 2.weight, 2.bias"),
    "replace": (_replace, "replaced by new tensors: 4.weight, 4.bias"),
    "dtype": (_widen, "changed: 0.weight (8, 8) torch.float32 on cpu -> (8, 8) torch.float64 on cpu"),
}


@pytest.mark.parametrize("attached", [False, True], ids=["with-block", "attach"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_of_the_trainable_parameters_is_refused_before_the_step(change: str, attached: bool) -> None:
    make_change, described = CHANGES[change]
    model = _model()
    _set_trainable(model[2], False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = _tracker(model)
    if attached:
        tracker.attach(optimizer)
    for step in range(CHANGE_AT):
        _minibatch_backward(model, optimizer, step)
        if attached:
            optimizer.step()
        else:
            with tracker.step(lr=0.1):
                optimizer.step()
    make_change(model)
    _minibatch_backward(model, optimizer, CHANGE_AT)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=f"step {CHANGE_AT}: .*changed since the tracker began") as refused:
        if attached:
            optimizer.step()
        else:
            with tracker.step(lr=0.1):
                optimizer.step()
    print(refused.value)
    assert described in str(refused.value)
    assert f"start_step={CHANGE_AT}" in str(refused.value)
    # Refused before the optimizer moved anything; the records so far stand.
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert [record.step for record in tracker.close()] == list(range(CHANGE_AT))


def test_the_refusal_names_the_way_on_and_a_new_tracker_measures_the_new_phase() -> None:
    # Gradual unfreezing as the message says to measure it: close, then a new tracker from this step.
    model = _model()
    _set_trainable(model[2], False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = _tracker(model)
    attachment = tracker.attach(optimizer)
    records = []
    for step in range(STEPS):
        if step == CHANGE_AT:
            _unfreeze(model)
        _minibatch_backward(model, optimizer, step)
        try:
            optimizer.step()
        except RuntimeError:
            attachment.remove()
            records += tracker.close()
            phase_start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            tracker = _tracker(model, start_step=step)
            attachment = tracker.attach(optimizer)
            optimizer.step()
    records += tracker.close()
    assert [record.step for record in records] == list(range(STEPS))
    end = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()
    # The new phase's distance is from where it began, over every parameter trainable in it.
    assert records[-1].distance_from_init == pytest.approx(float((end - phase_start.double()).norm()), rel=1e-6)
    # Its first step has no previous gradient: no cosine pairs the two phases' parameters.
    assert records[CHANGE_AT].cosine is None and records[CHANGE_AT + 1].cosine is not None


def test_a_checkpoint_of_other_trainable_parameters_is_refused() -> None:
    model = _model()
    _set_trainable(model[2], False)
    state = _tracker(model).state_dict()
    _swap(model)
    with pytest.raises(ValueError, match=r"other trainable parameters.*0.bias, 0.weight, 2.bias, 2.weight"):
        _tracker(model).load_state_dict(state)


def test_trainable_parameters_of_two_dtypes_are_refused_when_the_tracker_is_made() -> None:
    model = _model()
    model[4].double()
    with pytest.raises(ValueError, match=r"share one dtype and one device.*torch.float64 on cpu: 4.weight, 4.bias"):
        _tracker(model)


def test_a_frozen_parameter_of_another_dtype_is_not_the_walk_s() -> None:
    # A frozen bfloat16 embedding in front of float32 layers: the walk is the float32 layers'.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 8).to(torch.bfloat16), nn.Flatten(), nn.Linear(24, 5))
    model[0].weight.requires_grad_(False)

    class Float32Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.body[2](self.body[1](self.body[0](tokens).float()))

    network = Float32Head()
    tokens, targets = torch.randint(0, 20, (32, 3)), torch.randint(0, 5, (32,))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    tracker = WalkTracker(network, MeasurementSet(tokens, targets))
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(network(tokens), targets).backward()
        with tracker.step(lr=0.1):
            optimizer.step()
    records = tracker.close()
    assert len(records) == 2 and records[1].cosine is not None


def _two_optimizers(model: nn.Sequential) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Matrices under one optimizer, the rest under another: a common split."""
    matrices = [p for p in model.parameters() if p.ndim == 2]
    rest = [p for p in model.parameters() if p.ndim != 2]
    return torch.optim.SGD(matrices, lr=0.1), torch.optim.Adam(rest, lr=1e-3)


def test_an_optimizer_that_does_not_hold_every_trainable_parameter_is_refused() -> None:
    # Attached to one of two optimizers, each segment ended after its step alone, and the other's
    # step fell between records: no cosine was ever paired (found by a second pair of eyes).
    model = _model()
    matrices, rest = _two_optimizers(model)
    tracker = _tracker(model)
    with pytest.raises(
        ValueError, match=r"do not hold every trainable parameter \(0.bias, 2.bias, 4.bias are in none\)"
    ):
        tracker.attach(matrices)
    _minibatch_backward(model, matrices, 0)
    with pytest.raises(ValueError, match=r"0\.weight, 2\.weight, 4\.weight are in none"), tracker.step(optimizer=rest):
        rest.step()
    assert all(p.grad is not None for p in model.parameters())  # refused before either step


def test_two_optimizers_stepped_in_one_block_are_one_update() -> None:
    model = _model()
    matrices, rest = _two_optimizers(model)
    inputs, targets = _data()
    tracker = _tracker(model)
    for step in range(3):
        rest.zero_grad()  # the helper zeroes the matrices' optimizer's own only
        loss = _minibatch_backward(model, matrices, step)
        with tracker.step(minibatch_loss=loss, lr=0.1):
            matrices.step()
            rest.step()
    records = tracker.close()
    with torch.no_grad():
        after_both = float(F.cross_entropy(model(inputs[:32]), targets[:32]))
    # The segment ends after both steps; one float32 forward against the tracker's float64 mean.
    assert records[-1].loss_end == pytest.approx(after_both, rel=1e-6)
    assert records[1].cosine is not None and records[2].cosine is not None


@pytest.mark.parametrize("spans", [((0, 3),), ((0, 3), (6, 8))], ids=["after-the-last-window", "before-a-window"])
def test_a_change_between_windows_is_refused_only_where_a_kept_vector_is_read_next(
    spans: tuple[tuple[int, int], ...],
) -> None:
    # Measure the first steps, unfreeze later: nothing kept is read again, so training goes on.
    # With a window still to come, the step before it (whose θ_t that window's first step
    # reads) is refused. Found by a second pair of eyes: the check at every step stopped
    # a fine-tuning schedule that unfroze after its measured window.
    inputs, targets = _data()
    model = _model()
    _set_trainable(model[2], False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = WalkTracker(model, MeasurementSet(inputs[:32], targets[:32]), schedule=windows(list(spans)))
    tracker.attach(optimizer)
    for step in range(8):
        if step == 4:
            _unfreeze(model)
        _minibatch_backward(model, optimizer, step)
        if len(spans) == 1:
            optimizer.step()
            continue
        if step < 5:
            optimizer.step()
        else:
            with pytest.raises(RuntimeError, match="step 5: the model's trainable parameters changed"):
                optimizer.step()
            break
    assert [record.step for record in tracker.close()] == [0, 1, 2]
