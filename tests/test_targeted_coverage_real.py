"""Coverage of precision-targeted and exact records on real data (Fashion-MNIST, the default MLP).

One short SGD run; at early and late steps the segment θ_t → θ_{t+1} is measured on every
one of 45 disjoint 1,000-image sets that together make the 45,000 training images, with the
default ``PrecisionTarget`` (the rule people get) and exactly. The population's values are
those of all 45,000 images: the mean of the exact measurements of the sets, which are of
equal size. A set's 95 % interval (estimate ± 1.96 se) covers when it holds the population's
value; the count over sets and steps must reach what a true 95 % rate gives except with
probability ``FALSE_ALARM`` (binomial). The sets are independent at one step; across steps
they share images, so the bound is looser than it reads, which is why it is only a floor.

Exact records are checked the same way: their errors cover the choice of the floor too
(before, they kept the chosen floor's alone, and late steps' near-ties left their intervals
short, heights of 0 with errors of 0 among them).

Needs Debian's dataset-fashion-mnist; slow (``--runslow``), three to five minutes on two shared cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from sgdwalk import MeasurementSet, alpha_grid, flat_parameters
from sgdwalk.instrument.measurement import SegmentPoints
from sgdwalk.instrument.sampling import MeasuredSegment, PrecisionTarget, SamplePlan, measure_segment
from sgdwalk.runs.runner import WalkData, build_seeded_model, load_walk_data
from sgdwalk.training.config import WalkConfig
from sgdwalk.training.data import DatasetNotFoundError

pytestmark = pytest.mark.slow

# A true rate fails the check with at most this probability (the suite must not be flaky).
FALSE_ALARM = 1e-3
# The interval checked: 95 %, two-sided.
COVERAGE = 0.95
Z_COVERAGE = float(stats.norm.ppf(0.5 + COVERAGE / 2))
SET_SIZE = 1_000
K = 10
# Early (the loss falls fast, heights large) and late (floors near the ends, near-ties).
STEPS = (1, 3, 5, 55, 57, 59)
QUANTITIES = ("height_start", "height_end", "floor_depth")


@pytest.fixture(scope="module")
def data() -> WalkData:
    try:
        return load_walk_data(WalkConfig(train_subset=None))
    except DatasetNotFoundError as error:
        pytest.skip(str(error))


def segments_of_a_run(
    data: WalkData, steps: tuple[int, ...]
) -> tuple[torch.nn.Module, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """The default MLP trained by SGD (lr 0.1, batches of 100); (θ_t, θ_{t+1}) at ``steps``."""
    config = WalkConfig()
    model = build_seeded_model(config, data, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ends = {}
    for step in range(max(steps) + 1):
        chosen = torch.randint(data.train_inputs.shape[0], (config.batch_size,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(data.train_inputs[chosen]), data.train_targets[chosen]).backward()
        start = flat_parameters(model)
        optimizer.step()
        if step in steps:
            ends[step] = (start, flat_parameters(model))
    return model, ends


def values(measured: MeasuredSegment) -> dict[str, float]:
    return {
        "height_start": measured.summary.height_start,
        "height_end": measured.summary.height_end,
        "floor_depth": measured.uncertainty.floor_depth,
    }


def population_values(means: np.ndarray) -> dict[str, float]:
    """The quantities of a profile of losses (grid, then α = 1), by their definitions."""
    floor = float(means.min())
    return {
        "height_start": float(means[0]) - floor,
        "height_end": float(means[-1]) - floor,
        "floor_depth": min(float(means[0]), float(means[-1])) - floor,
    }


def test_targeted_intervals_cover_the_population_values(data: WalkData) -> None:
    model, ends = segments_of_a_run(data, STEPS)
    order = torch.randperm(data.train_inputs.shape[0], generator=torch.Generator().manual_seed(1))
    sets = [
        MeasurementSet(data.train_inputs[part], data.train_targets[part], chunk_size=SET_SIZE)
        for part in order.split(SET_SIZE)
        if part.numel() == SET_SIZE
    ]
    grid = (*alpha_grid(K), 1.0)
    target = PrecisionTarget()
    covered = {mode: dict.fromkeys(QUANTITIES, 0) for mode in ("targeted", "exact")}
    trials, zero_errors, samples = 0, 0, []
    for step in STEPS:
        start, end = ends[step]
        measured: dict[str, list[MeasuredSegment]] = {mode: [] for mode in ("targeted", "exact")}
        for subset in sets:
            points = SegmentPoints(model, start, end, grid, subset, "train")
            measured["exact"].append(measure_segment(points, subset, SamplePlan.of(subset, None), "train"))
            measured["targeted"].append(
                measure_segment(points, subset, SamplePlan.of(subset, target), "train", target=target)
            )
        population = population_values(np.mean([m.losses for m in measured["exact"]], axis=0))
        trials += len(sets)
        samples += [m.uncertainty.samples for m in measured["targeted"]]
        report = [f"step {step}:"]
        for mode, records in measured.items():
            for name in QUANTITIES:
                estimates = np.array([values(m)[name] for m in records])
                errors = np.array([getattr(m.uncertainty, f"{name}_se") for m in records])
                hits = int(np.sum(np.abs(estimates - population[name]) <= Z_COVERAGE * errors))
                covered[mode][name] += hits
                zero_errors += int(np.sum((estimates == 0) & (errors == 0) & (population[name] > 0)))
                spread = f"{estimates.std(ddof=1) / errors.mean():.2f}" if errors.mean() > 0 else "-"
                report.append(f"{mode} {name} {population[name]:.4f}: {hits}/{len(sets)}, spread/se {spread}")
        print(" | ".join(report))
    bound = int(stats.binom.ppf(FALSE_ALARM, trials, COVERAGE))
    for mode in covered:
        print(
            f"{mode}: " + ", ".join(f"{name} {covered[mode][name]}/{trials}" for name in QUANTITIES) + f" (>= {bound})"
        )
    print(
        f"targeted: {np.mean(samples):.0f} samples per set on average; "
        f"{zero_errors} heights of 0 with error 0 off the population (both modes)"
    )
    for mode in covered:
        assert all(covered[mode][name] >= bound for name in QUANTITIES), (mode, covered[mode])
    assert zero_errors == 0
