"""What one tracked step costs, in training steps of the default walk.

The default walk (``WalkConfig()``: the paper's MLP on 10,000 Fashion-MNIST images, batch
100, 5 epochs of 100 steps, the first 50 steps of epochs 1 and 5 tracked on a fixed set of
1,000 images, K = 10) is run side by side in one session three ways: untracked, tracked
exactly (the whole set every step) and tracked precision-targeted (the set read in a seeded
order until the step's barrier test is decided and its heights are as precise as the
defaults ask). A training step is the untracked walk's wall time per step (its evaluations
and checkpoints included, as the issue measured it); the cost of a tracked step is
(tracked − untracked) / (tracked steps), in those units. Beside each cost, the precision it
reached: the median standard error of the heights, the share of barrier tests decided and
the mean number of samples read.

Goal (issue "error bars"): the targeted mode at ≤ 2 training steps per tracked step with its
barrier tests decided. Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.conftest import EXTRAS, MEDIANS
from sgdwalk.runs.runner import WalkData, load_walk_data, run_walk
from sgdwalk.training.config import WalkConfig
from sgdwalk.training.data import DatasetNotFoundError

GROUP = "tracked-step-cost"
# The goal for the targeted mode, in training steps per tracked step.
TARGETED_GOAL = 2.0


def _timed(config: WalkConfig, data: WalkData) -> tuple[float, list]:
    began = time.perf_counter()
    result = run_walk(config, data=data, progress=False)
    return time.perf_counter() - began, result.records


def test_tracked_step_cost_in_training_steps(benchmark: BenchmarkFixture) -> None:
    base = WalkConfig(progress=False, checkpoint_every_epochs=None)
    try:
        data = load_walk_data(base)
    except DatasetNotFoundError as error:
        pytest.skip(str(error))
    configs = {
        "untracked": dataclasses.replace(base, track_epochs=()),
        "exact": dataclasses.replace(base, measurement_mode="exact"),
        "targeted": dataclasses.replace(base, measurement_mode="targeted"),
    }
    seconds: dict[str, float] = {}
    records: dict[str, list] = {}

    def one_round() -> None:
        for mode, config in configs.items():
            seconds[mode], records[mode] = _timed(config, data)

    benchmark.pedantic(one_round, rounds=1, warmup_rounds=0)
    steps = base.epochs * (data.train_inputs.shape[0] // base.batch_size)
    training_step = seconds["untracked"] / steps
    MEDIANS[GROUP]["reference"] = training_step
    benchmark.extra_info["training_step_seconds"] = training_step
    costs = {}
    for mode in ("exact", "targeted"):
        tracked = records[mode]
        cost = (seconds[mode] - seconds["untracked"]) / len(tracked) / training_step
        ses = [max(r.height_start_se, r.height_end_se) for r in tracked]
        decided = sum(r.barrier_test != "undecided" for r in tracked) / len(tracked)
        samples = statistics.mean(r.samples for r in tracked)
        costs[mode] = cost
        MEDIANS[GROUP][mode] = seconds[mode] / steps
        benchmark.extra_info.update(
            {
                f"{mode}_cost_in_training_steps": cost,
                f"{mode}_ratio_to_untracked": seconds[mode] / seconds["untracked"],
                f"{mode}_barrier_tests_decided": decided,
            }
        )
        EXTRAS[GROUP][f"{mode}: cost"] = f"{cost:.2f} training steps per tracked step"
        EXTRAS[GROUP][f"{mode}: precision"] = (
            f"median height se {statistics.median(ses):.4f}, barrier tests decided {decided:.0%}, samples {samples:.0f}"
        )
        print(f"{mode}: {cost:.2f} training steps per tracked step; {EXTRAS[GROUP][f'{mode}: precision']}")
    benchmark.extra_info.update(
        goal=f"targeted cost < exact cost; targeted <= {TARGETED_GOAL} training steps per tracked step (else xfail)",
        goal_met=costs["targeted"] < costs["exact"] and costs["targeted"] <= TARGETED_GOAL,
    )
    assert costs["targeted"] < costs["exact"], "precision-targeted measurement must cost less than exact"
    if costs["targeted"] > TARGETED_GOAL:
        pytest.xfail(f"targeted: {costs['targeted']:.2f} training steps per tracked step, goal {TARGETED_GOAL}")
