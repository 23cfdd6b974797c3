"""The error bars on real data (Fashion-MNIST, the default walk's MLP and the real tier's
conv net), against estimates that do not use them.

- Standard errors against disjoint measurement sets: the same segment measured on five
  disjoint sets of 1,000 images gives five heights; their spread, pooled over steps, must
  match the standard errors each measurement reported (a chi-square bound). This is an
  independent estimate: it uses no formula of the instrument, only fresh samples.
- Precision-targeted against exact: two trackers measure the same steps of one training
  run, one reading the whole set, one stopping once decided. Where both decide, they must
  agree, but for the targeted test's stated error rate (binomial bound).

Needs Debian's dataset-fashion-mnist; slow (``--runslow``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from sgdwalk import MeasurementSet, StepRecord, WalkTracker, alpha_grid, flat_parameters
from sgdwalk.instrument.measurement import SegmentPoints
from sgdwalk.instrument.sampling import PrecisionTarget, SamplePlan, measure_segment
from sgdwalk.instrument.tolerances import BARRIER_TEST_CONFIDENCE
from sgdwalk.runs.runner import WalkData, build_seeded_model, load_walk_data
from sgdwalk.training.config import WalkConfig
from sgdwalk.training.data import DatasetNotFoundError

pytestmark = pytest.mark.slow

# Probability that a check of a property that truly holds fails anyway (see
# test_uncertainty_coverage): the suite must not be flaky.
FALSE_ALARM = 1e-3
SUBSETS, SUBSET_SIZE = 5, 1_000
K = 10


@pytest.fixture(scope="module")
def data() -> WalkData:
    try:
        return load_walk_data(WalkConfig(train_subset=SUBSETS * SUBSET_SIZE + 5_000))
    except DatasetNotFoundError as error:
        pytest.skip(str(error))


def train(
    model: nn.Module, data: WalkData, steps: int, trackers: list[WalkTracker], lr: float = 0.1, batch: int = 100
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """SGD on the images after the measurement pool; returns the (θ_t, θ_{t+1}) of every step."""
    generator = torch.Generator().manual_seed(0)
    pool = data.train_inputs.shape[0] - SUBSETS * SUBSET_SIZE
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=1e-4)
    ends = []
    for _ in range(steps):
        chosen = SUBSETS * SUBSET_SIZE + torch.randint(pool, (batch,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data.train_inputs[chosen]), data.train_targets[chosen])
        loss.backward()
        start = flat_parameters(model)
        for tracker in trackers:
            tracker.before_step(minibatch_loss=loss, lr=lr)
        optimizer.step()
        for tracker in reversed(trackers):
            tracker.after_step()
        ends.append((start, flat_parameters(model)))
    return ends


@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_standard_errors_match_the_spread_over_disjoint_measurement_sets(data: WalkData, arch: str) -> None:
    model = build_seeded_model(
        dataclasses.replace(WalkConfig(), arch=arch, width_multiplier=0.5 if arch == "convnet" else 1.0),
        data,
        torch.device("cpu"),
    )
    segments = train(model, data, 120, [])
    subsets = [
        MeasurementSet(
            data.train_inputs[i * SUBSET_SIZE : (i + 1) * SUBSET_SIZE],
            data.train_targets[i * SUBSET_SIZE : (i + 1) * SUBSET_SIZE],
            chunk_size=SUBSET_SIZE,
        )
        for i in range(SUBSETS)
    ]
    grid = (*alpha_grid(K), 1.0)
    statistic, freedom = 0.0, 0
    for step in (0, 1, 2, 5, 10, 20, 40, 60, 80, 100, 119):
        start, end = segments[step]
        heights, variances = [], []
        for subset in subsets:
            points = SegmentPoints(model, start, end, grid, subset, "train")
            measured = measure_segment(points, subset, SamplePlan.of(subset, None), "train")
            heights.append(measured.summary.height_start)
            variances.append(measured.uncertainty.height_start_se**2)
        # (k − 1) s² / σ² ~ χ²(k − 1) when σ is right; σ² is the mean reported variance.
        statistic += (SUBSETS - 1) * float(np.var(heights, ddof=1)) / float(np.mean(variances))
        freedom += SUBSETS - 1
    low, high = stats.chi2.ppf([FALSE_ALARM / 2, 1 - FALSE_ALARM / 2], freedom)
    ratio = statistic / freedom
    print(
        f"{arch}: spread over disjoint sets / reported se, squared = {ratio:.3f} (χ² bounds {low / freedom:.3f}-{high / freedom:.3f}, {freedom} df)"
    )
    assert low <= statistic <= high


def test_targeted_decisions_agree_with_the_whole_sets(data: WalkData) -> None:
    model = build_seeded_model(WalkConfig(), data, torch.device("cpu"))
    whole = MeasurementSet(
        data.train_inputs[: SUBSETS * SUBSET_SIZE], data.train_targets[: SUBSETS * SUBSET_SIZE], chunk_size=1024
    )
    schedule = lambda step: step < 20 or 160 <= step < 200  # noqa: E731 - the real tier's two windows
    exact = WalkTracker(model, whole, schedule=schedule, weight_decay=1e-4)
    targeted = WalkTracker(
        model,
        whole,
        schedule=schedule,
        weight_decay=1e-4,
        precision=PrecisionTarget(height_se=None, height_relative_se=None),
    )
    train(model, data, 200, [exact, targeted])
    pairs: list[tuple[StepRecord, StepRecord]] = list(zip(exact.close(), targeted.close(), strict=True))
    both = [(a.barrier_test, b.barrier_test) for a, b in pairs if "undecided" not in (a.barrier_test, b.barrier_test)]
    disagree = sum(a != b for a, b in both)
    allowed = int(stats.binom.ppf(1 - FALSE_ALARM, len(both), 1 - BARRIER_TEST_CONFIDENCE))
    samples = np.mean([b.samples for _, b in pairs])
    decided = np.mean([b.barrier_test != "undecided" for _, b in pairs])
    print(
        f"targeted vs whole set ({whole.size}): {len(both)} steps decided by both, {disagree} disagree (<= {allowed}); "
        f"targeted decided {decided:.0%} reading {samples:.0f} samples on average"
    )
    assert disagree <= allowed
    assert samples < whole.size
