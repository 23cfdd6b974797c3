"""The loop table: in every loop, with every optimizer, clipping and accumulation, each record
equals a reference made by hand.

Loops: a plain loop (``with tracker.step(optimizer=...)``), an attached tracker
(``tracker.attach``) and Lightning (``LightningWalkCallback`` in ``Trainer.fit``), each ×
SGD, SGD with momentum, Adam (coupled decay), AdamW (decoupled decay), SGD with two parameter
groups × no clipping, norm clipping, value clipping × one or two micro-batches per step.

The reference is a loop without a tracker that trains the same walk and, around each
``optimizer.step()``, keeps θ_t and θ_{t+1} (float64 copies), the gradient the step is given
(read right before it: after the accumulation and the clipping) plus the coupled decay each
group adds (written here per case, not read from the optimizer), and the mean loss on the
measurement set by a direct forward at θ_t and θ_{t+1}. Every record field the definitions
rest on is computed from these in float64 and compared with a named tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import pytest
import torch
from torch import nn

from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.tracker import WalkTracker
from tests.helpers import FLOAT32_REORDERED, FLOAT64_REORDERED, Tolerance, assert_close, classification_data, mlp
from tests.integration_helpers import optional_library

# The one warning Lightning 2.6 raises here (as in tests/test_lightning.py): its combined loader
# builds torch's pytree LeafSpec, which torch 2.14 deprecates. Nothing this test or sgdwalk calls.
pytestmark = pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")

INPUTS, HIDDEN, CLASSES = 20, 16, 4
STEPS, BATCH, MEASURE_SIZE = 4, 6, 64
MAX_ACCUMULATION = 2
TRAIN_SIZE = STEPS * MAX_ACCUMULATION * BATCH  # one pass over the data, whatever the accumulation
MEASURE_CHUNK = 16  # the tracker measures in chunks; the reference in one forward
NUM_ALPHAS = 2  # the fields compared here need only the segment's ends
SGD_LR, ADAM_LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.01, 0.9, 0.05
# The second group's settings: another rate and another decay than the first's.
OTHER_LR, OTHER_WEIGHT_DECAY = 0.03, 0.2
# Below every step's gradient norm (0.75 to 1.4 on the unclipped walks) and its largest entries
# (0.18 to 0.42): both clips bite at every step (the reference checks that they do).
CLIP_NORM, CLIP_VALUE = 0.1, 0.02
CLIP_VALUE32 = float(torch.tensor(CLIP_VALUE, dtype=torch.float32))  # what clamp leaves at the bound
# A gradient the norm clip bit has norm CLIP_NORM·‖g‖/(‖g‖ + 1e-6) (clip_grad_norm_'s epsilon):
# within 1e-6/‖g‖ (under 1e-5 for ‖g‖ ≥ 0.1 = CLIP_NORM, which a bitten clip implies) of CLIP_NORM,
# plus float32 rounding.
CLIPPED_NORM_RELATIVE = 1e-5

# --------------------------------------------------------------------------- tolerances
# The tracker's gradient is float32 with the decay added in float32, the reference's float64:
# one float32 rounding per element (~6e-8 relative) in the norm, and in the cosine an absolute
# error of a few such roundings whatever the angle.
GRADIENT = Tolerance(1e-6, 1e-9, "float32 gradient (decay added in float32) against float64: ~6e-8 per element")
COSINE = Tolerance(0.0, 1e-6, "cosine of float32 vectors against float64: a few float32 roundings, absolute")
# The tracker subtracts θ_{t+1} − θ_t in float32 for the update cosine (exact where θ moved
# less than itself, else one rounding); step length and distances it takes in float64.
UPDATE_COSINE = Tolerance(0.0, 1e-6, "update made in float32: at most one rounding per element, absolute")
DISTANCE = FLOAT64_REORDERED
# The tracker's losses: per-sample float32 losses in chunks of 16, the reference's one forward of 64.
LOSS = FLOAT32_REORDERED
# Lightning sums the accumulated micro-batch losses in float32, the reference in float64.
MINIBATCH_LOSS = Tolerance(1e-6, 1e-9, "a float32 sum of two float32 losses against float64: one rounding")

FIELD_TOLERANCES: dict[str, Tolerance] = {
    "grad_norm": GRADIENT,
    "cosine": COSINE,
    "update_cosine": UPDATE_COSINE,
    "step_length": DISTANCE,
    "distance_from_init": DISTANCE,
    "param_norm": DISTANCE,
    "loss_start": LOSS,
    "loss_end": LOSS,
    "minibatch_loss": MINIBATCH_LOSS,
}
EXACT_FIELDS = ("step", "lr", "group_lrs")  # read from the optimizer's groups: equal, not close


# ------------------------------------------------------------------------------ the table
OptimizerFactory = Callable[[nn.Sequential], torch.optim.Optimizer]
Clip = Literal["none", "norm", "value"]
Loop = Literal["plain", "attach", "lightning"]


def _two_groups(model: nn.Sequential) -> torch.optim.Optimizer:
    first, *rest = model
    second = [p for layer in rest for p in layer.parameters()]
    groups: list[dict[str, Any]] = [
        {"params": first.parameters()},
        {"params": second, "lr": OTHER_LR, "weight_decay": OTHER_WEIGHT_DECAY},
    ]
    return torch.optim.SGD(groups, lr=SGD_LR, weight_decay=WEIGHT_DECAY)


@dataclass(frozen=True)
class OptimizerCase:
    """An optimizer, and what the reference knows of it by hand: the rates a record holds and,
    per parameter tensor (first layer's weight and bias, then the second's), the decay its
    step adds to the gradient."""

    make: OptimizerFactory
    lr: float | None
    group_lrs: tuple[float, ...] | None
    coupled_decay: tuple[float, ...]


OPTIMIZERS: dict[str, OptimizerCase] = {
    "sgd": OptimizerCase(
        lambda m: torch.optim.SGD(m.parameters(), lr=SGD_LR, weight_decay=WEIGHT_DECAY),
        SGD_LR,
        None,
        (WEIGHT_DECAY,) * 4,
    ),
    "momentum": OptimizerCase(
        lambda m: torch.optim.SGD(m.parameters(), lr=SGD_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY),
        SGD_LR,
        None,
        (WEIGHT_DECAY,) * 4,
    ),
    # Adam's weight_decay enters the gradient before its moments: coupled.
    "adam": OptimizerCase(
        lambda m: torch.optim.Adam(m.parameters(), lr=ADAM_LR, weight_decay=WEIGHT_DECAY),
        ADAM_LR,
        None,
        (WEIGHT_DECAY,) * 4,
    ),
    # AdamW shrinks θ apart from the gradient: the gradient used is g alone.
    "adamw": OptimizerCase(
        lambda m: torch.optim.AdamW(m.parameters(), lr=ADAM_LR, weight_decay=WEIGHT_DECAY),
        ADAM_LR,
        None,
        (0.0,) * 4,
    ),
    "two groups": OptimizerCase(
        _two_groups,
        None,
        (SGD_LR, OTHER_LR),
        (WEIGHT_DECAY,) * 2 + (OTHER_WEIGHT_DECAY,) * 2,
    ),
}
CLIPS: tuple[Clip, ...] = ("none", "norm", "value")
ACCUMULATIONS = (1, MAX_ACCUMULATION)
LOOPS: tuple[Loop, ...] = ("plain", "attach", "lightning")


@dataclass(frozen=True)
class Case:
    optimizer: str
    clip: Clip
    accumulation: int

    @property
    def name(self) -> str:
        return f"{self.optimizer}-clip {self.clip}-accumulate {self.accumulation}"


CASES = [Case(o, c, a) for o in OPTIMIZERS for c in CLIPS for a in ACCUMULATIONS]


# -------------------------------------------------------------------- the shared training
def network() -> nn.Sequential:
    return mlp(0, inputs=INPUTS, hidden=HIDDEN, classes=CLASSES)


@cache
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return classification_data(0, TRAIN_SIZE + MEASURE_SIZE, inputs=INPUTS, classes=CLASSES)


def measurement() -> MeasurementSet:
    inputs, targets = data()
    return MeasurementSet(inputs[TRAIN_SIZE:], targets[TRAIN_SIZE:], chunk_size=MEASURE_CHUNK)


def micro_batches(accumulation: int) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """The batches of each optimizer step, in the order a DataLoader without shuffling gives."""
    inputs, targets = data()
    batches = [(inputs[i : i + BATCH], targets[i : i + BATCH]) for i in range(0, TRAIN_SIZE, BATCH)]
    for step in range(STEPS):
        yield batches[step * accumulation : (step + 1) * accumulation]


def clip_gradients(model: nn.Module, clip: Clip) -> None:
    """What Lightning's ``gradient_clip_val`` does: torch's own clipping functions."""
    if clip == "norm":
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
    elif clip == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), CLIP_VALUE)


StepTaker = Callable[[torch.optim.Optimizer, torch.Tensor], None]


def train(model: nn.Sequential, optimizer: torch.optim.Optimizer, case: Case, take_step: StepTaker) -> None:
    """Lightning's automatic optimization by hand: each micro-batch's loss divided by the
    accumulation count and back-propagated, the gradient clipped, then ``take_step``."""
    for batches in micro_batches(case.accumulation):
        optimizer.zero_grad()
        minibatch_loss = torch.zeros(())
        for inputs, targets in batches:
            loss = nn.functional.cross_entropy(model(inputs), targets) / case.accumulation
            loss.backward()
            minibatch_loss = minibatch_loss + loss.detach()
        clip_gradients(model, case.clip)
        take_step(optimizer, minibatch_loss)


# ---------------------------------------------------------------------------- the reference
def _flat64(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().double().reshape(-1) for t in tensors])


def _cosine64(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _measured_loss(model: nn.Module) -> float:
    inputs, targets = data()
    with torch.no_grad():
        losses = nn.functional.cross_entropy(model(inputs[TRAIN_SIZE:]), targets[TRAIN_SIZE:], reduction="none")
    return float(losses.double().mean())


@dataclass(frozen=True)
class HandStep:
    theta_start: torch.Tensor
    theta_end: torch.Tensor
    used_gradient: torch.Tensor
    minibatch_loss: float
    loss_start: float
    loss_end: float


def _raw_gradient(model: nn.Module) -> torch.Tensor:
    return _flat64([p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])


def hand_steps(case: Case) -> list[HandStep]:
    """The walk without a tracker: θ, the gradient used and the measured loss around each step."""
    option = OPTIMIZERS[case.optimizer]
    model = network()
    optimizer = option.make(model)
    steps: list[HandStep] = []

    def take_step(optimizer: torch.optim.Optimizer, minibatch_loss: torch.Tensor) -> None:
        parameters = list(model.parameters())
        theta = _flat64(parameters)
        decay = _flat64([d * torch.ones_like(p) for d, p in zip(option.coupled_decay, parameters, strict=True)])
        used = _raw_gradient(model) + decay * theta
        loss_start = _measured_loss(model)
        optimizer.step()
        steps.append(
            HandStep(theta, _flat64(parameters), used, float(minibatch_loss), loss_start, _measured_loss(model))
        )

    train(model, optimizer, case, _checking_the_clip_bites(model, case, take_step))
    return steps


def _checking_the_clip_bites(model: nn.Module, case: Case, take_step: StepTaker) -> StepTaker:
    """The reference's steps, after checking that the case's clip changed the gradient (a clip
    that never bites would test nothing)."""
    if case.clip == "none":
        return take_step

    def checked(optimizer: torch.optim.Optimizer, minibatch_loss: torch.Tensor) -> None:
        clipped = _raw_gradient(model)
        if case.clip == "norm":
            assert float(clipped.norm()) == pytest.approx(CLIP_NORM, rel=CLIPPED_NORM_RELATIVE), (
                f"{case.name}: the norm clip did not bite"
            )
        else:
            assert float(clipped.abs().max()) == CLIP_VALUE32, f"{case.name}: the value clip did not bite"
        take_step(optimizer, minibatch_loss)

    return checked


@cache
def reference(case: Case) -> tuple[dict[str, Any], ...]:
    """The expected value of every compared field, per step, from ``hand_steps`` in float64."""
    option = OPTIMIZERS[case.optimizer]
    steps = hand_steps(case)
    theta_0 = steps[0].theta_start
    expected = []
    for t, step in enumerate(steps):
        update = step.theta_end - step.theta_start
        before = steps[t - 1] if t > 0 else None
        expected.append(
            {
                "step": t,
                "lr": option.lr,
                "group_lrs": option.group_lrs,
                "minibatch_loss": step.minibatch_loss,
                "loss_start": step.loss_start,
                "loss_end": step.loss_end,
                "grad_norm": float(step.used_gradient.norm()),
                "cosine": None if before is None else _cosine64(before.used_gradient, step.used_gradient),
                "update_cosine": None if before is None else _cosine64(before.theta_end - before.theta_start, update),
                "step_length": float(update.norm()),
                "distance_from_init": float((step.theta_end - theta_0).norm()),
                "param_norm": float(step.theta_end.norm()),
            }
        )
    return tuple(expected)


# ------------------------------------------------------------------------------- the loops
def plain_loop(case: Case) -> list[StepRecord]:
    model = network()
    optimizer = OPTIMIZERS[case.optimizer].make(model)
    tracker = WalkTracker(model, measurement(), num_alphas=NUM_ALPHAS)

    def take_step(optimizer: torch.optim.Optimizer, minibatch_loss: torch.Tensor) -> None:
        with tracker.step(minibatch_loss=minibatch_loss, optimizer=optimizer):
            optimizer.step()

    train(model, optimizer, case, take_step)
    return tracker.close()


def attached_loop(case: Case) -> list[StepRecord]:
    model = network()
    optimizer = OPTIMIZERS[case.optimizer].make(model)
    tracker = WalkTracker(model, measurement(), num_alphas=NUM_ALPHAS)

    def take_step(optimizer: torch.optim.Optimizer, minibatch_loss: torch.Tensor) -> None:
        tracker.note_loss(minibatch_loss)
        optimizer.step()

    with tracker.attach(optimizer):
        train(model, optimizer, case, take_step)
    return tracker.close()


def lightning_loop(case: Case) -> list[StepRecord]:
    lightning = optional_library("lightning", "lightning")
    from torch.utils.data import DataLoader, TensorDataset

    from sgdwalk.integrations.lightning_callback import LightningWalkCallback

    make = OPTIMIZERS[case.optimizer].make

    class Module(lightning.LightningModule):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.net = network()

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # what the tracker measures through
            return self.net(inputs)

        def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
            inputs, targets = batch
            return nn.functional.cross_entropy(self(inputs), targets)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return make(self.net)

    inputs, targets = data()
    loader = DataLoader(TensorDataset(inputs[:TRAIN_SIZE], targets[:TRAIN_SIZE]), batch_size=BATCH, shuffle=False)
    callback = LightningWalkCallback(measurement(), log_to_loggers=False, num_alphas=NUM_ALPHAS)
    clipping: dict[str, Any] = {}
    if case.clip != "none":
        clipping = {
            "gradient_clip_val": CLIP_NORM if case.clip == "norm" else CLIP_VALUE,
            "gradient_clip_algorithm": case.clip,
        }
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=STEPS,
        accumulate_grad_batches=case.accumulation,
        callbacks=[callback],
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **clipping,
    )
    trainer.fit(Module(), loader)
    assert callback.tracker is not None
    return callback.tracker.close()


LOOP_RUNNERS: dict[Loop, Callable[[Case], list[StepRecord]]] = {
    "plain": plain_loop,
    "attach": attached_loop,
    "lightning": lightning_loop,
}


# -------------------------------------------------------------------------------- the test
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
# The Lightning rows are slow: importing Lightning alone takes seconds.
@pytest.mark.parametrize(
    "loop", [pytest.param(loop, marks=pytest.mark.slow) if loop == "lightning" else loop for loop in LOOPS]
)
def test_every_record_equals_the_hand_reference(loop: Loop, case: Case) -> None:
    records = LOOP_RUNNERS[loop](case)
    expected = reference(case)
    assert len(records) == len(expected) == STEPS, f"{loop}, {case.name}: one record per optimizer step"
    for record, wanted in zip(records, expected, strict=True):
        where = f"{loop}, {case.name}, step {wanted['step']}"
        for name in EXACT_FIELDS:
            assert getattr(record, name) == wanted[name], f"{where}: {name}"
        for name, tolerance in FIELD_TOLERANCES.items():
            actual = getattr(record, name)
            if wanted[name] is None:
                assert actual is None, f"{where}: {name} is {actual}, expected None (no step before)"
                continue
            assert actual is not None and math.isfinite(actual), f"{where}: {name} is {actual}"
            assert_close(actual, wanted[name], tolerance, f"{where}: {name}")
