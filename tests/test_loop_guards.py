"""Loops that made records silently wrong or left the tracker stuck, found by a second pair of
eyes, each against a float64 reference or a refusal before the optimizer moves anything:

- sparse gradients (``nn.Embedding(sparse=True)`` with ``SparseAdam``) are read dense;
- a parameter outside the walk that the optimizer still moves (a layer frozen after
  ``zero_grad(set_to_none=False)``, its zero gradient and momentum stepped on) is refused;
- a tracker state loaded beside a model from another step is refused at the next step;
- a step whose gradient could not be read leaves the tracker usable.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdwalk import MeasurementSet, WalkTracker
from tests.helpers import Tolerance, assert_close, classification_data, mlp

# Float32 gradients and updates read back in float64: norms and cosines of ~100 float32
# numbers agree to ~1e-7 relative; 1e-6 leaves room for the summation order and nothing more.
FLOAT32_NORMS = Tolerance(1e-6, 1e-7, "float32 vectors of ~100 entries against float64")
VOCABULARY, WIDTH, DECAY = 20, 5, 1e-2


class _Bag(nn.Module):
    """A bag of embeddings and a linear head: the embedding's gradient is sparse."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(VOCABULARY, WIDTH, sparse=True)
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        output: torch.Tensor = self.head(self.embedding(tokens).mean(dim=1))
        return output


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().double().reshape(-1) for t in tensors])


def test_sparse_gradients_are_read_as_the_optimizers_step_applies_them() -> None:
    """SparseAdam on the embedding and SGD (coupled decay) on the head, one block: before,
    reading the gradient stopped at the first step in torch's "reshape is not implemented for
    sparse tensors"; now grad_norm, cosine and step_length equal a float64 reference, and the
    trajectory is the untracked one."""
    generator = torch.Generator().manual_seed(1)
    tokens, labels = torch.randint(0, VOCABULARY, (48, 3), generator=generator), torch.randint(0, 3, (48,))
    measured = MeasurementSet(torch.randint(0, VOCABULARY // 2, (24, 3), generator=generator), labels[:24])

    def train(tracked: bool) -> tuple[_Bag, list[tuple[torch.Tensor, torch.Tensor]], list]:
        model = _Bag()
        sparse = torch.optim.SparseAdam(list(model.embedding.parameters()), lr=0.05)
        dense = torch.optim.SGD(model.head.parameters(), lr=0.1, weight_decay=DECAY)
        tracker = WalkTracker(model, measured, num_alphas=4) if tracked else None
        references = []
        for step in range(6):
            sparse.zero_grad()
            dense.zero_grad()
            batch = slice(8 * step, 8 * step + 8)
            F.cross_entropy(model(tokens[batch]), labels[batch]).backward()
            embedding_gradient = model.embedding.weight.grad
            assert embedding_gradient is not None and embedding_gradient.is_sparse
            head = list(model.head.parameters())
            used = torch.cat(
                [
                    embedding_gradient.to_dense().double().reshape(-1),
                    _flat([p.grad for p in head if p.grad is not None]) + DECAY * _flat(head),
                ]
            )
            before = _flat(list(model.parameters()))
            if tracker is None:
                sparse.step()
                dense.step()
            else:
                with tracker.step(optimizer=(sparse, dense)):
                    sparse.step()
                    dense.step()
            references.append((used, _flat(list(model.parameters())) - before))
        return model, references, [] if tracker is None else tracker.close()

    model, references, records = train(tracked=True)
    untracked, _, _ = train(tracked=False)
    for name, value in untracked.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), f"{name}: the tracker changed the training"
    assert [r.step for r in records] == list(range(6))
    for record, (gradient, update) in zip(records, references, strict=True):
        assert_close(record.grad_norm, float(gradient.norm()), FLOAT32_NORMS, f"step {record.step} grad_norm")
        assert_close(record.step_length, float(update.norm()), FLOAT32_NORMS, f"step {record.step} step_length")
    for record, (previous, _), (gradient, _) in zip(records[1:], references[:-1], references[1:], strict=True):
        expected = float(previous @ gradient / (previous.norm() * gradient.norm()))
        assert record.cosine is not None
        assert_close(record.cosine, expected, FLOAT32_NORMS, f"step {record.step} cosine")


def test_a_frozen_parameter_the_optimizer_still_moves_is_refused() -> None:
    """A layer frozen after ``zero_grad(set_to_none=False)`` keeps a zero gradient, and SGD's
    momentum moves it on: the segments left it out (off by 2-4e-4, step_length 4-7 % short).
    Refused at the step, before the optimizer moves anything; with the gradient set to None
    (torch's default) the same loop is measured."""
    inputs, targets = classification_data(0, 32)
    measurement = MeasurementSet(inputs, targets, chunk_size=16)
    for set_to_none in (False, True):
        model = mlp(0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step in range(2):  # trained whole: the first layer has a momentum buffer
            optimizer.zero_grad(set_to_none=set_to_none)
            F.cross_entropy(model(inputs[8 * step : 8 * step + 8]), targets[8 * step : 8 * step + 8]).backward()
            optimizer.step()
        first = model[0]
        assert isinstance(first, nn.Linear)
        first.requires_grad_(False)
        tracker = WalkTracker(model, measurement, num_alphas=4, start_step=2)
        optimizer.zero_grad(set_to_none=set_to_none)
        F.cross_entropy(model(inputs[16:24]), targets[16:24]).backward()
        before = first.weight.detach().clone()
        if set_to_none:
            with tracker.step(optimizer=optimizer):
                optimizer.step()
            assert torch.equal(first.weight, before) and len(tracker.close()) == 1
            continue
        with (
            pytest.raises(ValueError, match=r"would move parameters outside the walk \(0\.weight, 0\.bias\)"),
            tracker.step(optimizer=optimizer),
        ):
            optimizer.step()  # pragma: no cover - refused before it
        assert torch.equal(first.weight, before), "refused after the optimizer moved"


def test_a_frozen_parameter_the_step_cannot_move_is_let_be() -> None:
    """A zero gradient under plain SGD (no momentum, no decay) moves nothing: measured."""
    inputs, targets = classification_data(0, 32)
    model = mlp(0)
    first = model[0]
    assert isinstance(first, nn.Linear)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    first.requires_grad_(False)
    for parameter in first.parameters():
        parameter.grad = torch.zeros_like(parameter)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets, chunk_size=16), num_alphas=4)
    F.cross_entropy(model(inputs[:8]), targets[:8]).backward()
    before = first.weight.detach().clone()
    with tracker.step(optimizer=optimizer):
        optimizer.step()
    assert torch.equal(first.weight, before) and len(tracker.close()) == 1


def test_a_tracker_state_saved_at_other_weights_is_refused_at_the_next_step() -> None:
    """A tracker saved at step 3 beside a model saved at step 5: before, the step was numbered
    3 and its α = 0 loss taken at θ_3, without a word."""
    inputs, targets = classification_data(0, 48)
    measurement = MeasurementSet(inputs, targets, chunk_size=16)
    model = mlp(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = WalkTracker(model, measurement, num_alphas=4)
    saved = {}
    for step in range(5):
        if step == 3:
            saved["tracker"] = tracker.state_dict()
        optimizer.zero_grad()
        F.cross_entropy(model(inputs[8 * step : 8 * step + 8]), targets[8 * step : 8 * step + 8]).backward()
        with tracker.step(optimizer=optimizer):
            optimizer.step()
    resumed = WalkTracker(model, measurement, num_alphas=4)  # the model at step 5
    resumed.load_state_dict(saved["tracker"])
    optimizer.zero_grad()
    F.cross_entropy(model(inputs[40:48]), targets[40:48]).backward()
    with pytest.raises(RuntimeError, match="does not hold the weights the tracker's state was saved at"):
        resumed.before_step(optimizer=optimizer)


def test_a_step_whose_gradient_cannot_be_read_leaves_the_tracker_usable() -> None:
    """Before, the next step was refused ("before_step called twice without after_step")."""
    inputs, targets = classification_data(0, 32)
    model = mlp(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets, chunk_size=16), num_alphas=4)
    for step, loss_given in enumerate((torch.ones(2), None)):  # a loss of two numbers is no minibatch loss
        optimizer.zero_grad()
        F.cross_entropy(model(inputs[8 * step : 8 * step + 8]), targets[8 * step : 8 * step + 8]).backward()
        if loss_given is not None:
            with pytest.raises((RuntimeError, ValueError)):
                tracker.before_step(minibatch_loss=loss_given, optimizer=optimizer)
            continue
        with tracker.step(optimizer=optimizer):
            optimizer.step()
    (record,) = tracker.close()
    assert record.step == 0 and record.cosine is None
