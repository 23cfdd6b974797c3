"""WalkTracker inside a real training loop, against quantities recomputed by hand.

The loop trains a small network with batch norm and dropout by torch.optim.SGD with weight
decay, drawing its minibatches from torch's global generator, so any random number the
tracker drew, or any buffer it moved, would change the trajectory.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, cast

import numpy as np
import pytest
import torch
from torch import nn

import sgdwalk.instrument.measurement as measurement_module
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout, losses_at_points
from sgdwalk.instrument.record import RECORD_FIELDS, StepRecord
from sgdwalk.instrument.schedule import MeasurementSchedule, every_kth, every_step, windows
from sgdwalk.instrument.segment import alpha_grid
from sgdwalk.instrument.sharpness import sharpness_with_standard_error, top_hessian_eigenvalue
from sgdwalk.instrument.tolerances import SHARPNESS_RELATIVE_ERROR
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.instrument.uncertainty import BARRIER_TEST_OUTCOMES
from tests.helpers import (
    FLOAT64_REORDERED,
    LANCZOS_SEED_TO_SEED,
    assert_close,
    classification_data,
    linear_layer,
    measured_steps,
    mlp,
)

STEPS = 7
NUM_ALPHAS = 4
LR = 0.2
WEIGHT_DECAY = 0.01
TRAIN_SIZE, MEASURE_SIZE, BATCH = 48, 32, 8

SCHEDULES: dict[str, Callable[[], MeasurementSchedule]] = {
    "every-step": every_step,
    "windows": lambda: windows([(1, 3), (5, 6)]),
    "every-3rd": lambda: every_kth(3),
}


@dataclass
class Run:
    """One training run and what the loop itself saw, in float64, to recompute by hand."""

    model: nn.Module
    measurement: MeasurementSet
    tracker: WalkTracker | None
    records: list[StepRecord]
    rng_state: torch.Tensor
    parameters: list[np.ndarray] = field(default_factory=list)  # θ_0 … θ_STEPS
    directions: list[np.ndarray] = field(default_factory=list)  # g_t + λ θ_t, t = 0 … STEPS − 1
    minibatch_losses: list[float] = field(default_factory=list)


def as_numpy(model: nn.Module) -> np.ndarray:
    return flat_parameters(model).double().numpy()


def train(
    make_tracker: Callable[[nn.Module, MeasurementSet], WalkTracker] | None,
    *,
    steps: int = STEPS,
    lr: float = LR,
    seed: int = 0,
) -> Run:
    torch.manual_seed(seed)
    model = mlp(seed, batchnorm=True, dropout=0.3)
    inputs, targets = classification_data(seed, TRAIN_SIZE)
    measurement = MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE], chunk_size=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    tracker = make_tracker(model, measurement) if make_tracker else None
    run = Run(model, measurement, tracker, [], torch.empty(0), parameters=[as_numpy(model)])
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, TRAIN_SIZE, (BATCH,))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
        loss.backward()
        # The direction SGD steps along, formed in float32 as SGD forms it: g + λθ.
        run.directions.append(
            # cast: backward() has just filled every parameter's .grad.
            np.concatenate(
                [
                    (cast(torch.Tensor, p.grad) + WEIGHT_DECAY * p).detach().double().numpy().ravel()
                    for p in model.parameters()
                ]
            )
        )
        run.minibatch_losses.append(float(loss.detach()))
        if tracker is None:
            optimizer.step()
        else:
            with tracker.step(minibatch_loss=loss, lr=lr):
                optimizer.step()
            if tracker.diverged:
                break
        run.parameters.append(as_numpy(model))
    run.records = tracker.close() if tracker else []
    run.rng_state = torch.random.get_rng_state()
    return run


def tracked(schedule: MeasurementSchedule, **kwargs: Any) -> Callable[[nn.Module, MeasurementSet], WalkTracker]:
    def make(model: nn.Module, measurement: MeasurementSet) -> WalkTracker:
        return WalkTracker(
            model,
            measurement,
            schedule=schedule,
            num_alphas=NUM_ALPHAS,
            weight_decay=WEIGHT_DECAY,
            **kwargs,
        )

    return make


@pytest.fixture(scope="module")
def untracked() -> Run:
    return train(None)


@pytest.fixture(scope="module", params=list(SCHEDULES))
def tracked_run(request: pytest.FixtureRequest) -> tuple[str, Run]:
    name = request.param
    return name, train(tracked(SCHEDULES[name]()))


# ------------------------------------------------------------------------ no side effects
def assert_bitwise_same_training(tracked: Run, untracked: Run) -> None:
    tracked_state, untracked_state = tracked.model.state_dict(), untracked.model.state_dict()
    assert tracked_state.keys() == untracked_state.keys()
    for name in tracked_state:  # parameters and batch-norm buffers alike
        assert torch.equal(tracked_state[name], untracked_state[name]), f"{name} differs with the tracker"
    assert torch.equal(tracked.rng_state, untracked.rng_state), "the tracker moved torch's random stream"
    assert tracked.model.training and untracked.model.training


def test_tracker_does_not_change_training(tracked_run: tuple[str, Run], untracked: Run) -> None:
    assert_bitwise_same_training(tracked_run[1], untracked)


@pytest.mark.parametrize("bn_mode", ["train", "eval", "recompute"])
def test_tracker_with_sharpness_does_not_change_training(bn_mode: str) -> None:
    run = train(tracked(every_step(), sharpness_every=3, bn_mode=bn_mode), steps=4)
    baseline = train(None, steps=4)
    assert_bitwise_same_training(run, baseline)


# --------------------------------------------------------------------------- the records
def test_one_record_per_scheduled_step(tracked_run: tuple[str, Run]) -> None:
    name, run = tracked_run
    steps = measured_steps(SCHEDULES[name](), STEPS)
    assert [record.step for record in run.records] == steps
    for record in run.records:
        assert record.lr == LR
        assert record.minibatch_loss == run.minibatch_losses[record.step]
        assert record.segment_alphas == (*alpha_grid(NUM_ALPHAS).tolist(), 1.0)
        assert len(record.segment_losses) == NUM_ALPHAS + 1
        assert record.sharpness is None
    assert run.tracker is not None and run.records == run.tracker.records


def test_segment_losses_are_the_loss_along_the_step(tracked_run: tuple[str, Run]) -> None:
    # Every grid point is L at θ_t + α(θ_{t+1} − θ_t), and α = 1 is L(θ_{t+1}) itself.
    _, run = tracked_run
    for record in run.records:
        start = torch.from_numpy(run.parameters[record.step]).float()
        end = torch.from_numpy(run.parameters[record.step + 1]).float()
        points = [start + alpha * (end - start) if alpha else start for alpha in alpha_grid(NUM_ALPHAS)]
        expected = losses_at_points(run.model, [*points, end], run.measurement)
        np.testing.assert_array_equal(record.segment_losses, expected, err_msg=f"step {record.step}")
        assert (record.loss_start, record.loss_end) == (expected[0], expected[-1])


def test_consecutive_segments_share_their_endpoint(tracked_run: tuple[str, Run]) -> None:
    name, run = tracked_run
    by_step = {record.step: record for record in run.records}
    shared = [(by_step[t], by_step[t + 1]) for t in by_step if t + 1 in by_step]
    assert len(shared) == {"every-step": STEPS - 1, "windows": 1, "every-3rd": 0}[name]
    for record, following in shared:
        assert record.segment_losses[-1] == following.segment_losses[0]
        assert record.loss_end == following.loss_start


def test_cosine_gradient_and_distances_by_hand(tracked_run: tuple[str, Run]) -> None:
    _, run = tracked_run
    theta_0 = run.parameters[0]
    for record in run.records:
        t = record.step
        g_t, theta_next = run.directions[t], run.parameters[t + 1]
        if t == 0:
            assert record.cosine is None  # no previous gradient at the first step
        else:
            g_prev = run.directions[t - 1]
            expected = g_prev @ g_t / (np.linalg.norm(g_prev) * np.linalg.norm(g_t))
            assert record.cosine is not None
            assert_close(record.cosine, expected, FLOAT64_REORDERED, f"cos(g_{t - 1}, g_{t}) with weight decay")
        assert_close(record.grad_norm, np.linalg.norm(g_t), FLOAT64_REORDERED, f"‖g_{t}‖")
        assert_close(record.step_length, np.linalg.norm(theta_next - run.parameters[t]), FLOAT64_REORDERED, "step")
        assert_close(
            record.distance_from_init, np.linalg.norm(theta_next - theta_0), FLOAT64_REORDERED, "‖θ_{t+1} − θ_0‖"
        )
        assert_close(record.param_norm, np.linalg.norm(theta_next), FLOAT64_REORDERED, "‖θ_{t+1}‖")


def test_cosine_uses_the_gradient_of_an_unmeasured_previous_step() -> None:
    # every_kth(3, offset=1) measures 1 and 4: the gradients of steps 0 and 3 are kept for them.
    run = train(tracked(every_kth(3, offset=1)), steps=5)
    assert [record.step for record in run.records] == [1, 4]
    for record in run.records:
        g_prev, g_t = run.directions[record.step - 1], run.directions[record.step]
        expected = g_prev @ g_t / (np.linalg.norm(g_prev) * np.linalg.norm(g_t))
        assert record.cosine is not None
        assert_close(record.cosine, expected, FLOAT64_REORDERED, f"cos(g_{record.step - 1}, g_{record.step})")


def test_cosine_is_none_on_the_first_step_the_tracker_sees() -> None:
    run = train(tracked(every_step(), start_step=10), steps=2)
    assert [record.step for record in run.records] == [10, 11]
    assert run.records[0].cosine is None and run.records[1].cosine is not None


def test_record_fields_are_plain_finite_numbers(tracked_run: tuple[str, Run]) -> None:
    _, run = tracked_run
    for record in run.records:
        assert tuple(f.name for f in fields(record)) == RECORD_FIELDS
        assert record.barrier_test in BARRIER_TEST_OUTCOMES
        for name, value in record.as_dict().items():
            if name == "barrier_test":
                continue
            for number in value if isinstance(value, tuple) else (value,):
                assert number is None or type(number) in (int, float, bool)
                assert number is None or math.isfinite(number)


# ------------------------------------------------------------- α = 0 is never recomputed
@pytest.fixture
def counted_points(
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[tuple[float, ...], bool, list[dict[str, torch.Tensor]]]]:
    """Every chunk evaluation: the segment's α, whether α = 0 was skipped, and the points."""
    calls: list[tuple[tuple[float, ...], bool, list[dict[str, torch.Tensor]]]] = []
    original = measurement_module.SegmentPoints.losses

    def counting(
        self: measurement_module.SegmentPoints, batch: Any, targets: Any = None, *, skip_first: bool = False
    ) -> torch.Tensor:
        points = [self.parameters(index) for index in (0, -1)]  # built on demand: clone before the next
        calls.append((self.alphas, skip_first, [{name: value.clone() for name, value in p.items()} for p in points]))
        return original(self, batch, targets, skip_first=skip_first)

    monkeypatch.setattr(measurement_module.SegmentPoints, "losses", counting)
    return calls


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_alpha_zero_is_the_previous_alpha_one_and_alpha_one_is_the_next_iterate(
    name: str, counted_points: list[tuple[tuple[float, ...], bool, list[dict[str, torch.Tensor]]]]
) -> None:
    schedule = SCHEDULES[name]()
    run = train(tracked(schedule))
    steps = measured_steps(schedule, STEPS)
    # α = 0 is evaluated only when the step before was not measured; otherwise its losses
    # are the previous step's α = 1, on every chunk.
    chunks = math.ceil(MEASURE_SIZE / 16)
    assert [skip for _, skip, _ in counted_points] == [t > 0 and schedule(t - 1) for t in steps for _ in range(chunks)]
    layout = ParameterLayout.of(run.model)
    for t, (alphas, _, parameters) in zip(steps, counted_points[::chunks], strict=True):
        assert alphas == (*(float(a) for a in alpha_grid(NUM_ALPHAS)), 1.0)
        theta_t, theta_next = (torch.from_numpy(run.parameters[s]).float() for s in (t, t + 1))
        assert torch.equal(torch.cat([p.reshape(-1) for p in parameters[0].values()]), theta_t)
        end = torch.cat([p.reshape(-1) for p in parameters[-1].values()])
        assert torch.equal(end, theta_next), f"step {t}: α = 1 must be θ_{{t+1}} itself"
    assert len(layout.names) == len(parameters[0])


def test_every_record_is_complete_when_its_step_is() -> None:
    model = mlp(0)
    inputs, targets = classification_data(0, 16)
    measurement = MeasurementSet(inputs, targets)
    tracker = WalkTracker(model, measurement, num_alphas=NUM_ALPHAS)
    for step in range(2):
        tracker.before_step()
        with torch.no_grad():
            linear_layer(model, 0).bias.add_(0.1)  # a "step" without an optimizer
        completed = tracker.after_step()
        assert [record.step for record in completed] == [step]
        end = flat_parameters(model)
        assert completed[0].loss_end == losses_at_points(model, [end], measurement)[0]
    assert [record.step for record in tracker.close()] == [0, 1]
    assert tracker.records[1].loss_start == tracker.records[0].loss_end
    assert tracker.records[0].lr is None and tracker.records[0].minibatch_loss is None
    with pytest.raises(RuntimeError, match="closed"):
        tracker.before_step()  # a closed tracker records nothing more


def test_a_measurement_set_must_be_one() -> None:
    inputs, targets = classification_data(0, 8)
    with pytest.raises(TypeError, match="MeasurementSet"):
        WalkTracker(mlp(0), (inputs, targets))  # type: ignore[arg-type]  # the mistake under test


# -------------------------------------------------------------------- sharpness on steps
def test_sharpness_on_every_kth_measured_step_at_the_next_iterate() -> None:
    run = train(tracked(every_step(), sharpness_every=2, sharpness_seed=5), steps=4)
    assert [record.sharpness is not None for record in run.records] == [True, False, True, False]
    warm_start = None
    for record in run.records:
        if record.sharpness is not None:
            point = torch.from_numpy(run.parameters[record.step + 1]).float()
            # The first estimate starts cold; each later one from the previous eigenvector.
            estimate = sharpness_with_standard_error(run.model, point, run.measurement, seed=5, warm_start=warm_start)
            assert (record.sharpness, record.sharpness_se, record.sharpness_products) == (
                estimate.value,
                estimate.standard_error,
                estimate.products,
            )
            cold = top_hessian_eigenvalue(run.model, point, run.measurement, seed=5)
            # Either start ends within the solver's error bound of the top eigenvalue.
            assert record.sharpness == pytest.approx(cold, rel=2 * SHARPNESS_RELATIVE_ERROR)
            warm_start = estimate.vector
        else:
            assert record.sharpness_se is None and record.sharpness_products is None


def test_sharpness_carries_its_standard_error_over_the_set() -> None:
    model = mlp(2)
    inputs, targets = classification_data(2, 64)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets, chunk_size=16), sharpness_every=1, sharpness_seed=3)
    tracker.before_step()
    with torch.no_grad():
        linear_layer(model, 0).bias.add_(0.1)
    (record,) = tracker.after_step()
    point = flat_parameters(model)
    assert record.sharpness == top_hessian_eigenvalue(model, point, tracker.measurement, seed=3)
    estimate = sharpness_with_standard_error(model, point, tracker.measurement, seed=3)
    assert record.sharpness_se == estimate.standard_error and estimate.batches >= 2


# ------------------------------------------------------------------------- divergence
def assert_finite_records(records: list[StepRecord]) -> None:
    for record in records:
        for value in record.as_dict().values():
            for number in value if isinstance(value, tuple) else (value,):
                assert number is None or isinstance(number, str) or math.isfinite(number), record


def test_huge_learning_rate_diverges_quietly() -> None:
    run = train(tracked(every_step()), lr=1e30, steps=6)
    assert run.tracker is not None and run.tracker.diverged
    assert run.tracker.divergence is not None and run.tracker.divergence.startswith("step ")
    assert len(run.records) < 6
    assert_finite_records(run.records)


class Break:
    """Each way a step can go wrong, applied at step 3 of a hand-driven walk."""

    @staticmethod
    def minibatch_loss(model: nn.Module) -> float:
        return float("nan")

    @staticmethod
    def parameters(model: nn.Module) -> float:
        with torch.no_grad():
            linear_layer(model, 0).weight[0, 0] = float("inf")
        return 1.0

    @staticmethod
    def measured_loss(model: nn.Module) -> float:
        # Finite parameters whose cross-entropy overflows: logits ±3e38 give a loss of 6e38 = inf.
        with torch.no_grad():
            linear_layer(model, -1).weight.zero_()
            linear_layer(model, -1).bias.copy_(torch.tensor([3e38, -3e38, 0.0]))
        return 1.0


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        (Break.minibatch_loss, "non-finite minibatch loss"),
        (Break.parameters, "non-finite parameters"),
        (Break.measured_loss, "non-finite loss on the measurement set"),
    ],
    ids=["minibatch-loss", "parameters", "measured-loss"],
)
def test_divergence_keeps_every_sound_segment(how: Callable[[nn.Module], float], reason: str) -> None:
    model = mlp(1)
    inputs, targets = classification_data(1, 16)
    targets[0] = 1  # so that the overflowing class is someone's target
    tracker = WalkTracker(model, MeasurementSet(inputs, targets), num_alphas=NUM_ALPHAS)
    for step in range(6):
        minibatch_loss = 1.0
        if step == 3 and how is Break.minibatch_loss:
            minibatch_loss = how(model)
        with tracker.step(minibatch_loss=minibatch_loss):
            if step == 3 and how is not Break.minibatch_loss:
                how(model)
            else:
                with torch.no_grad():
                    linear_layer(model, 0).bias.sub_(0.05)
    records = tracker.close()
    assert tracker.diverged and reason in str(tracker.divergence)
    assert str(tracker.divergence).startswith("step 3")
    # Steps 0-2 were sound; step 2's α = 1 (θ_3, the start of the broken step) is finite.
    assert [record.step for record in records] == [0, 1, 2]
    assert_finite_records(records)


# --------------------------------------------------------------------------- plumbing
def test_sinks_see_each_record_once_in_order() -> None:
    seen: list[StepRecord] = []
    run = train(tracked(every_step(), sinks=[seen.append]), steps=3)
    assert seen == run.records and len(seen) == 3


def test_start_step_numbers_the_steps() -> None:
    run = train(tracked(windows([(10, 12)]), start_step=10), steps=3)
    assert [record.step for record in run.records] == [10, 11]


def test_default_grid_has_ten_points() -> None:
    model = mlp(0)
    inputs, targets = classification_data(0, 8)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets))
    assert tracker.alphas.tolist() == alpha_grid(10).tolist()


def test_misuse_is_refused() -> None:
    model = mlp(0)
    measurement = MeasurementSet(*classification_data(0, 8))
    tracker = WalkTracker(model, measurement)
    with pytest.raises(RuntimeError, match="after_step called without before_step"):
        tracker.after_step()
    tracker.before_step()
    with pytest.raises(RuntimeError, match="before_step called twice"):
        tracker.before_step()
    with pytest.raises(ValueError, match="sharpness_every must be positive or None, got 0"):
        WalkTracker(model, measurement, sharpness_every=0)
    with pytest.raises(ValueError, match="unknown batch-norm mode 'running'"):
        WalkTracker(model, measurement, bn_mode="running")  # type: ignore[arg-type]  # deliberately not a mode: the run-time check is under test
    with pytest.raises(ValueError, match="num_alphas must be at least 2"):
        WalkTracker(model, measurement, num_alphas=1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        WalkTracker(nn.ReLU(), measurement)


def test_a_resumed_tracker_warm_starts_its_sharpness_as_an_uninterrupted_one() -> None:
    """The eigenvector the next estimate starts from is in the checkpoint, so every-step
    sharpness after a resume is the uninterrupted run's, bit for bit."""

    def walk(resume_after: int | None) -> list[StepRecord]:
        torch.manual_seed(0)
        model = mlp(0)
        inputs, targets = classification_data(0, TRAIN_SIZE)
        measurement = MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE], chunk_size=16)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        tracker = WalkTracker(model, measurement, sharpness_every=1)
        for step in range(4):
            if step == resume_after:
                saved = io.BytesIO()
                torch.save(tracker.state_dict(), saved)
                saved.seek(0)
                tracker = WalkTracker(model, measurement, sharpness_every=1, start_step=step)
                tracker.load_state_dict(torch.load(saved, weights_only=True))
            batch = torch.randint(0, TRAIN_SIZE, (BATCH,))
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[batch]), targets[batch]).backward()
            with tracker.step(optimizer=optimizer):
                optimizer.step()
        return tracker.close()

    whole, resumed = walk(None), walk(2)
    assert all(record.sharpness_products for record in whole)
    assert resumed == whole


def test_the_tracker_reads_the_set_in_its_own_chunks_for_the_sharpness() -> None:
    """``hvp_chunk_size``: the sharpness's products in chunks of their own, the same value
    as in the set's chunks (both converged Lanczos runs, no batch norm in train mode)."""
    model = mlp(13)
    inputs, targets = classification_data(13, 24)
    measurement = MeasurementSet(inputs, targets, chunk_size=24)
    default = WalkTracker(model, measurement, bn_mode="eval")
    chunked = WalkTracker(model, measurement, bn_mode="eval", hvp_chunk_size=5)
    assert default.hvp_measurement is measurement
    assert (chunked.hvp_measurement.size, chunked.hvp_measurement.chunk_size) == (24, 5)
    assert_close(chunked.sharpness(), default.sharpness(), LANCZOS_SEED_TO_SEED, "sharpness in chunks of 5")
