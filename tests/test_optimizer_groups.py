"""The rates and the weight decay come from the optimizer's parameter groups, per group.

An attached tracker (and ``with tracker.step(optimizer=...)``) records the gradient the
update uses: coupled decay (SGD's ``weight_decay``) added to it, wd·θ per group, decoupled
decay (AdamW's) not. The reference is made by hand from float64 copies of the raw gradient
and of θ_t taken around each step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.optimizer_groups import DecayForm, coupled_decay, group_settings
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.schedule import windows
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.integrations.metrics import flat_metrics
from sgdwalk.runs.runlog import record_from_dict
from tests.helpers import FLOAT32_VECTOR_VS_FLOAT64, assert_close, classification_data, mlp

STEPS, BATCH, TRAIN_SIZE = 5, 8, 32
LR, WEIGHT_DECAY = 0.1, 0.05
# The second group's settings: another rate and another decay than the first's.
OTHER_LR, OTHER_WEIGHT_DECAY = 0.03, 0.2

OptimizerFactory = Callable[[nn.Sequential], torch.optim.Optimizer]
# Several optimizers whose steps make one update.
SeveralFactory = Callable[[nn.Sequential], tuple[torch.optim.Optimizer, ...]]


def sgd(model: nn.Sequential) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


def adamw(model: nn.Sequential) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


def two_groups(model: nn.Sequential) -> torch.optim.Optimizer:
    first, *rest = model
    groups: list[dict[str, Any]] = [
        {"params": first.parameters()},
        {
            "params": [p for layer in rest for p in layer.parameters()],
            "lr": OTHER_LR,
            "weight_decay": OTHER_WEIGHT_DECAY,
        },
    ]
    return torch.optim.SGD(groups, lr=LR, weight_decay=WEIGHT_DECAY)


@dataclass
class HandWalk:
    records: list[StepRecord]
    used_gradients: list[torch.Tensor]  # float64, g_t plus the coupled decay the step adds
    update_lengths: list[float]  # |θ_{t+1} − θ_t| in float64, the whole update (every optimizer's step)


def _flat64(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().double().reshape(-1) for t in tensors])


def hand_walk(
    make: OptimizerFactory | SeveralFactory,
    decays: list[float],
    *,
    attach: bool,
    declared_form: DecayForm | None = None,
) -> HandWalk:
    """``make``: one optimizer, or several whose steps make the update (a with block only);
    ``decays``: per parameter tensor, the coupled decay the reference adds (by hand, not read
    back); ``declared_form``: the tracker's ``weight_decay_form``."""
    model = mlp(0)
    inputs, targets = classification_data(0, TRAIN_SIZE)
    made = make(model)
    optimizers = made if isinstance(made, tuple) else (made,)
    tracker = WalkTracker(
        model, MeasurementSet(inputs[:16], targets[:16]), num_alphas=2, weight_decay_form=declared_form
    )
    attachment = tracker.attach(made) if attach and not isinstance(made, tuple) else None
    used: list[torch.Tensor] = []
    lengths: list[float] = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        batch = torch.randint(0, TRAIN_SIZE, (BATCH,), generator=generator)
        for optimizer in optimizers:
            optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs[batch]), targets[batch]).backward()
        parameters = list(model.parameters())
        grads = [p.grad for p in parameters if p.grad is not None]
        used.append(_flat64(grads) + _flat64([decay * p for decay, p in zip(decays, parameters, strict=True)]))
        before = _flat64(parameters)
        if attachment is not None:
            made.step()  # type: ignore[union-attr]  # one optimizer when attached
        else:
            with tracker.step(optimizer=made):
                for optimizer in optimizers:
                    optimizer.step()
        lengths.append(float((_flat64(list(model.parameters())) - before).norm()))
    if attachment is not None:
        attachment.remove()
    return HandWalk(tracker.close(), used, lengths)


def _cosine64(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def adafactor(model: nn.Sequential) -> torch.optim.Optimizer:
    return torch.optim.Adafactor(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


class Lion(torch.optim.Optimizer):
    """Lion (Chen et al. 2023), written here as a user would: not one of torch's optimizers, and
    its decay decoupled (θ shrinks by lr·wd apart from the sign update)."""

    def __init__(self, params: Any, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.99)) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": betas})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]  # no closure form: the tests never pass one
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                momentum = self.state[p].setdefault("momentum", torch.zeros_like(p))
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(beta1 * momentum + (1 - beta1) * p.grad), alpha=-group["lr"])
                momentum.mul_(beta2).add_(p.grad, alpha=1 - beta2)


class CoupledSGD(torch.optim.Optimizer):
    """Plain SGD written by hand, its decay coupled (added to the gradient), as SGD's is."""

    def __init__(self, params: Any, lr: float, weight_decay: float) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]  # no closure form: the tests never pass one
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad + group["weight_decay"] * p, alpha=-group["lr"])


class DeclaredCoupledSGD(CoupledSGD):
    """The same, its class saying how its step applies the decay."""

    weight_decay_form = "coupled"


class DecoupledSGDSubclass(torch.optim.SGD):
    """A subclass of torch's SGD whose own step decouples the decay (as a user may write one)."""

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]  # no closure form: the tests never pass one
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(1 - group["lr"] * group["weight_decay"]).add_(p.grad, alpha=-group["lr"])


def lookahead_step(lookahead: Any) -> None:
    """The inner step, then every ``k``-th step the weights pulled ``alpha`` of the way back to the slow ones."""
    lookahead.optimizer.step()
    lookahead.steps += 1
    if lookahead.steps % lookahead.k == 0:
        fast = [p for group in lookahead.param_groups for p in group["params"]]
        for slow, p in zip(lookahead.slow, fast, strict=True):
            slow.add_(p - slow, alpha=lookahead.alpha)
            p.copy_(slow)


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019) as users write it: an optimizer in its own right holding the
    inner one as ``.optimizer``; every ``k``-th step pulls the weights halfway back to the slow ones."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 2, alpha: float = 0.5) -> None:
        self.optimizer, self.k, self.alpha, self.steps = optimizer, k, alpha, 0
        super().__init__(optimizer.param_groups, {})
        self.param_groups = optimizer.param_groups
        self.slow = [p.detach().clone() for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]  # no closure form: the tests never pass one
        lookahead_step(self)


def two_decay_coupled_sgd(model: nn.Sequential) -> torch.optim.Optimizer:
    weights = [p for p in model.parameters() if p.ndim == 2]
    biases = [p for p in model.parameters() if p.ndim != 2]
    groups = [{"params": weights}, {"params": biases, "weight_decay": OTHER_WEIGHT_DECAY}]
    return CoupledSGD(groups, lr=LR, weight_decay=WEIGHT_DECAY)


def decoupled_sgd_subclass(model: nn.Sequential) -> torch.optim.Optimizer:
    return DecoupledSGDSubclass(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


def lookahead_sgd(model: nn.Sequential) -> torch.optim.Optimizer:
    return Lookahead(sgd(model))


def lion(model: nn.Sequential) -> torch.optim.Optimizer:
    return Lion(model.parameters(), lr=1e-3, weight_decay=WEIGHT_DECAY)


def coupled_sgd(model: nn.Sequential) -> torch.optim.Optimizer:
    return CoupledSGD(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


def declared_coupled_sgd(model: nn.Sequential) -> torch.optim.Optimizer:
    return DeclaredCoupledSGD(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


# Each case: the optimizer, the coupled decay its step adds per parameter tensor (by hand), and
# the tracker's weight_decay_form (None: left out).
CASES: dict[str, tuple[OptimizerFactory, list[float], DecayForm | None]] = {
    # SGD's decay enters the gradient, on every parameter.
    "sgd": (sgd, [WEIGHT_DECAY] * 4, None),
    # AdamW's decay shrinks θ apart from the gradient: the gradient used is g alone.
    "adamw": (adamw, [0.0] * 4, None),
    # So does Adafactor's, though it is not an AdamW.
    "adafactor": (adafactor, [0.0] * 4, None),
    # Each group its own decay: the first layer's weight and bias, then the second layer's.
    "two groups": (two_groups, [WEIGHT_DECAY] * 2 + [OTHER_WEIGHT_DECAY] * 2, None),
    # Optimizers torch does not ship: the loop declares the decay their step adds to the gradient.
    "lion, declared decoupled": (lion, [0.0] * 4, "decoupled"),
    "hand-written SGD, declared coupled": (coupled_sgd, [WEIGHT_DECAY] * 4, "coupled"),
    # Each group's own decay, the form declared: the weights at one decay, the biases at another.
    "hand-written SGD, two decays, declared coupled": (
        two_decay_coupled_sgd,
        [WEIGHT_DECAY, OTHER_WEIGHT_DECAY] * 2,
        "coupled",
    ),
    # A subclass of torch's SGD that writes its own step, decoupled: read from the loop's word.
    "SGD subclass with its own step, declared decoupled": (decoupled_sgd_subclass, [0.0] * 4, "decoupled"),
    # A Lookahead holding SGD: its inner step makes the gradient, so SGD's coupled form.
    "lookahead around SGD": (lookahead_sgd, [WEIGHT_DECAY] * 4, None),
    # Or the optimizer's class says it (DECAY_FORM_ATTRIBUTE).
    "hand-written SGD, its class says coupled": (declared_coupled_sgd, [WEIGHT_DECAY] * 4, None),
}


@pytest.mark.parametrize("attach", [True, False], ids=["attached", "with step(optimizer=)"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_recorded_gradient_is_the_one_the_step_used(case: str, attach: bool) -> None:
    make, decays, declared_form = CASES[case]
    walk = hand_walk(make, decays, attach=attach, declared_form=declared_form)
    records, used = walk.records, walk.used_gradients
    assert [r.step for r in records] == list(range(STEPS))
    assert_close([r.grad_norm for r in records], [float(g.norm()) for g in used], FLOAT32_VECTOR_VS_FLOAT64, case)
    assert records[0].cosine is None
    expected_cosines = [_cosine64(used[t - 1], used[t]) for t in range(1, STEPS)]
    assert_close([r.cosine for r in records[1:]], expected_cosines, FLOAT32_VECTOR_VS_FLOAT64, f"{case} cosine")
    # The segment is the whole update (a Lookahead's pull-back included).
    lengths = walk.update_lengths
    assert_close([r.step_length for r in records], lengths, FLOAT32_VECTOR_VS_FLOAT64, f"{case} step length")


def test_two_rates_are_each_recorded() -> None:
    records = hand_walk(two_groups, [WEIGHT_DECAY] * 2 + [OTHER_WEIGHT_DECAY] * 2, attach=True).records
    assert all(r.lr is None and r.group_lrs == (LR, OTHER_LR) for r in records)
    records = hand_walk(sgd, [WEIGHT_DECAY] * 4, attach=True).records
    assert all(r.lr == LR and r.group_lrs is None for r in records), "one rate: lr, and no group_lrs"


def test_group_rates_survive_json_the_metrics_and_a_checkpoint() -> None:
    record = hand_walk(two_groups, [WEIGHT_DECAY] * 2 + [OTHER_WEIGHT_DECAY] * 2, attach=True).records[0]
    assert record_from_dict(json.loads(json.dumps(record.as_dict()))) == record
    metrics = flat_metrics(record)
    assert (metrics["group_lrs/0"], metrics["group_lrs/1"]) == (LR, OTHER_LR) and "lr" not in metrics
    model = mlp(0)
    inputs, targets = classification_data(0, 8)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets), num_alphas=2)
    state = tracker.state_dict()
    tracker.load_state_dict({**state, "records": [{**record.as_dict(), "group_lrs": [LR, OTHER_LR]}]})
    assert tracker.close() == [record]


def test_old_records_without_group_rates_still_load() -> None:
    record = hand_walk(sgd, [WEIGHT_DECAY] * 4, attach=True).records[0]
    saved = {name: value for name, value in record.as_dict().items() if name != "group_lrs"}
    assert record_from_dict({**saved, "group_lrs": float("nan")}) == record  # pandas' fill for a missing column


def test_a_tracker_decay_the_optimizer_does_not_add_is_refused_before_the_update() -> None:
    model = mlp(0)
    inputs, targets = classification_data(0, 8)
    optimizer = adamw(model)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets), num_alphas=2, weight_decay=WEIGHT_DECAY)
    tracker.attach(optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    nn.functional.cross_entropy(model(inputs), targets).backward()
    with pytest.raises(ValueError, match=r"leave weight_decay out.*reads it from the optimizer"):
        optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True)), "the update ran"


def test_decoupled_decay_is_read_per_group() -> None:
    model = mlp(0)
    parameters = list(model.parameters())
    groups: list[dict[str, Any]] = [
        {"params": parameters[:2], "decoupled_weight_decay": True},
        {"params": parameters[2:]},
    ]
    adam = torch.optim.Adam(groups, weight_decay=0.1)
    assert coupled_decay(adam, parameters) == (0.0, 0.0, 0.1, 0.1)
    assert coupled_decay(adamw(model), parameters) == (0.0,) * 4
    assert group_settings(torch.optim.SGD(parameters[:2], lr=0.1), parameters).coupled_decay == (0.0,) * 4


# An optimizer whose step's gradient the records could not hold, and the words of its refusal.
REFUSED: dict[str, tuple[OptimizerFactory, str]] = {
    "lion, decay undeclared": (lion, r"Lion is not one of torch's optimizers.*weight_decay_form='decoupled'"),
    "hand-written SGD, decay undeclared": (coupled_sgd, r"CoupledSGD is not one of torch's optimizers"),
    "SGD subclass with its own step, undeclared": (
        decoupled_sgd_subclass,
        r"DecoupledSGDSubclass .*writes its own step",
    ),
    "SGD that ascends": (
        lambda model: torch.optim.SGD(model.parameters(), lr=LR, maximize=True),
        r"SGD has maximize=True.*minimise its negative",
    ),
}


@pytest.mark.parametrize("attach", [True, False], ids=["at attach", "at the with block's first step"])
@pytest.mark.parametrize("case", list(REFUSED))
def test_an_optimizer_whose_gradient_is_unknown_is_refused_before_its_first_step(case: str, attach: bool) -> None:
    make, words = REFUSED[case]
    model = mlp(0)
    inputs, targets = classification_data(0, 8)
    optimizer = make(model)
    # Measured only from step 5: the refusal must not wait for the first measured step.
    tracker = WalkTracker(model, MeasurementSet(inputs, targets), num_alphas=2, schedule=windows([(5, 6)]))
    before = [p.detach().clone() for p in model.parameters()]
    nn.functional.cross_entropy(model(inputs), targets).backward()
    with pytest.raises(ValueError, match=words):
        if attach:
            tracker.attach(optimizer)
        else:
            with tracker.step(optimizer=optimizer):
                optimizer.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True)), "the update ran"


def test_an_optimizer_without_decay_needs_no_declaration() -> None:
    model = mlp(0)
    parameters = list(model.parameters())
    assert coupled_decay(Lion(parameters, lr=1e-3, weight_decay=0.0), parameters) == (0.0,) * 4
    assert coupled_decay(torch.optim.Rprop(parameters), parameters) == (0.0,) * 4


def test_muon_decay_is_decoupled() -> None:
    # Muon takes matrices only; its step shrinks θ by (1 − lr·wd), its default decay 0.1.
    matrices = [p for p in mlp(0).parameters() if p.ndim == 2]
    assert coupled_decay(torch.optim.Muon(matrices, lr=0.02), matrices) == (0.0, 0.0)


@pytest.mark.parametrize("attach", [True, False], ids=["attached", "with step(optimizer=)"])
def test_accelerates_wrapper_is_read_as_the_optimizer_inside(attach: bool) -> None:
    # accelerate's AcceleratedOptimizer is an Optimizer subclass without step hooks of its own,
    # whose class says nothing of AdamW's decoupled decay: the tracker reads the AdamW inside.
    accelerate = pytest.importorskip("accelerate")
    accelerator = accelerate.Accelerator(cpu=True)

    def wrapped_adamw(model: nn.Sequential) -> torch.optim.Optimizer:
        wrapped: torch.optim.Optimizer = accelerator.prepare_optimizer(adamw(model))
        assert type(wrapped).__name__ == "AcceleratedOptimizer"
        return wrapped

    walk = hand_walk(wrapped_adamw, [0.0] * 4, attach=attach)
    plain = hand_walk(adamw, [0.0] * 4, attach=attach)
    assert [r.step for r in walk.records] == list(range(STEPS))
    assert walk.records == plain.records
    assert_close(
        [r.grad_norm for r in walk.records], [float(g.norm()) for g in walk.used_gradients], FLOAT32_VECTOR_VS_FLOAT64
    )


def _matrices_and_rest(model: nn.Sequential) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    return [p for p in model.parameters() if p.ndim == 2], [p for p in model.parameters() if p.ndim != 2]


# Two optimizers whose steps make one update: on the matrices, then on the rest (the MLP's
# parameters in order: weight, bias, weight, bias), each with its own rate and decay; and the
# tracker's weight_decay_form for one torch does not ship.
TWO_OPTIMIZERS: dict[str, tuple[SeveralFactory, list[float], DecayForm | None]] = {
    # Both decays coupled, and different: each parameter's from the optimizer holding it.
    "SGD and Adam": (
        lambda model: (
            torch.optim.SGD(_matrices_and_rest(model)[0], lr=LR, weight_decay=WEIGHT_DECAY),
            torch.optim.Adam(_matrices_and_rest(model)[1], lr=OTHER_LR, weight_decay=OTHER_WEIGHT_DECAY),
        ),
        [WEIGHT_DECAY, OTHER_WEIGHT_DECAY] * 2,
        None,
    ),
    # Muon as it is used, with AdamW on what is not a matrix: both decays decoupled.
    "Muon and AdamW": (
        lambda model: (
            torch.optim.Muon(_matrices_and_rest(model)[0], lr=LR, weight_decay=WEIGHT_DECAY),
            torch.optim.AdamW(_matrices_and_rest(model)[1], lr=OTHER_LR, weight_decay=WEIGHT_DECAY),
        ),
        [0.0] * 4,
        None,
    ),
    # An optimizer torch does not ship (decoupled, declared) beside SGD's coupled decay: the
    # declaration is of its form, so SGD's decay stays its own (a declared value could not say
    # both; found by a second pair of eyes).
    "Lion and SGD": (
        lambda model: (
            Lion(_matrices_and_rest(model)[0], lr=LR, weight_decay=WEIGHT_DECAY),
            torch.optim.SGD(_matrices_and_rest(model)[1], lr=OTHER_LR, weight_decay=OTHER_WEIGHT_DECAY),
        ),
        [0.0, OTHER_WEIGHT_DECAY] * 2,
        "decoupled",
    ),
}


@pytest.mark.parametrize("case", list(TWO_OPTIMIZERS))
def test_the_optimizers_of_one_update_are_read_together(case: str) -> None:
    make, decays, declared_form = TWO_OPTIMIZERS[case]
    walk = hand_walk(make, decays, attach=False, declared_form=declared_form)
    records, used = walk.records, walk.used_gradients
    assert all(r.lr is None and r.group_lrs == (LR, OTHER_LR) for r in records)
    assert_close([r.grad_norm for r in records], [float(g.norm()) for g in used], FLOAT32_VECTOR_VS_FLOAT64, case)
    expected = [_cosine64(used[t - 1], used[t]) for t in range(1, STEPS)]
    assert_close([r.cosine for r in records[1:]], expected, FLOAT32_VECTOR_VS_FLOAT64, f"{case} cosine")
    # The update is both steps: each segment ends after the second.
    lengths = walk.update_lengths
    assert_close([r.step_length for r in records], lengths, FLOAT32_VECTOR_VS_FLOAT64, f"{case} step length")


def test_one_of_two_optimizers_alone_is_refused() -> None:
    model = mlp(0)
    inputs, targets = classification_data(0, 8)
    first, _ = TWO_OPTIMIZERS["SGD and Adam"][0](model)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets), num_alphas=2)
    nn.functional.cross_entropy(model(inputs), targets).backward()
    with pytest.raises(ValueError, match=r"hand it them all, `with tracker.step\(optimizer=\(first, second\)\)"):
        tracker.before_step(optimizer=first)


class LookaheadWithoutInit(torch.optim.Optimizer):
    """Lookahead as several libraries write it: an Optimizer subclass that never runs
    Optimizer.__init__, so it has no step hooks of its own."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 2, alpha: float = 0.5) -> None:
        self.optimizer, self.k, self.alpha, self.steps = optimizer, k, alpha, 0
        self.param_groups, self.defaults, self.state = optimizer.param_groups, optimizer.defaults, optimizer.state
        self.slow = [p.detach().clone() for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]  # no closure form: the tests never pass one
        lookahead_step(self)


def test_a_wrapper_without_hooks_that_may_do_more_is_measured_in_a_with_block_not_attached() -> None:
    # Attached to the inner SGD, its pull-backs fell outside every measured step (found by a
    # second pair of eyes): refused, with the with block's way; there its whole step is the update.
    model = mlp(0)
    inputs, targets = classification_data(0, 8)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets), num_alphas=2)
    with pytest.raises(TypeError, match=r"LookaheadWithoutInit holds SGD as \.optimizer and has no step hooks"):
        tracker.attach(LookaheadWithoutInit(sgd(model)))
    walk = hand_walk(lambda model: LookaheadWithoutInit(sgd(model)), [WEIGHT_DECAY] * 4, attach=False)
    lengths = walk.update_lengths
    assert_close([r.step_length for r in walk.records], lengths, FLOAT32_VECTOR_VS_FLOAT64, "whole step")
