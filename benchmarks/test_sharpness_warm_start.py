"""Sharpness at every measured step: Hessian-vector products per estimate, warm against cold.

Setting: the default walk (``WalkConfig()``: the paper's MLP with batch norm on 10,000
Fashion-MNIST images, SGD at lr 0.1, batch 100, weight decay 1e-4, a measurement set of
1,000 images) for its first ``STEPS`` updates, every one measured with its sharpness, three
ways side by side on the same trajectory (the tracker never changes it): the eigen-solver
started cold at every step (a seeded vector plus the gradient), warm-started from the
previous step's eigenvector, and warm-started at the looser ``LOOSE_TOLERANCE``.

Printed: the mean products per estimate, the time per estimate and the largest relative
difference from the cold start's value (both are within the solver's tolerance of an
eigenvalue). Goal (issue "measurement at scale"): the warm start takes fewer products than
the cold start, asserted; the issue's "about three" is printed beside it.

Measured on the project's 2-core CPU (shared with other work, so times are upper bounds),
30 steps, the warm vector added to the cold start (since a second pair of eyes found the
warm vector alone blind to a top eigenvalue that moved to another block of a block-diagonal
Hessian, tests/test_sharpness.py): cold 15.5 products per estimate, warm 15.1 at the default
tolerance (0.94x the time; values within 2.3e-8 of the cold start's), warm 9.5 at 1e-3
(0.63x; within 5.0e-6). At lr 0.1 this MLP sits at the edge of stability from the first
updates (its sharpness oscillates about 2/lr = 20) and its top eigenvector turns far between
consecutive steps, so the previous eigenvector starts Lanczos little closer than the
gradient does. With the warm vector in place of the cold start (before that finding) the
counts were 14.5, 8.7 at 1e-3, 5.9 at 1e-2 and 3.3 at 1e-1; at lr 0.02 (a pilot, 40 steps)
18.5 cold, 14.6 warm, 7.6 warm at 1e-3. A pilot of a block start (24 steps of the same walk
at lr 0.1, tolerance 1e-3, each step's top two eigenvectors from scipy's eigsh, uncounted):
the best Ritz vector in the span of the previous step's top two has a residual of 23-94 % of
the value, so the new top eigenvector lies mostly outside the old top-two space, and
Rayleigh-Ritz on it plus Lanczos from its best vector took 9.6 products per estimate against
8.75 from the previous eigenvector alone.

The tolerance the statistics ask for (``STATISTICAL_TOLERANCE``, 1e-2; same 30 steps): warm
7.0 products per estimate against 8.0 cold at that tolerance and 15.5 cold at the default,
values within 3.0e-4 of the tight cold start's (1.4e-4 cold), a hundredth of the sampling
standard error (0.50x and 0.55x the default cold start's time). The issue's three products
come only at 1e-1 (3.7 per estimate, 0.31x the time), whose values are off by up to 2.0e-1,
more than a standard error: the residual bound is that of an eigenvalue, and a Ritz value
that has not yet found the top one satisfies it too. Needs Debian's dataset-fashion-mnist.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks.conftest import EXTRAS, MEDIANS
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.runs.runner import load_walk_data
from sgdwalk.training.config import WalkConfig
from sgdwalk.training.data import DatasetNotFoundError
from sgdwalk.training.models import build_model

GROUP = "sharpness-every-step"
STEPS = 30
# A residual bound of 1e-3 of the value still leaves the value itself good to about
# (1e-3)² / (relative gap) by Kato-Temple: ~1e-5 at a gap of a tenth of the value.
LOOSE_TOLERANCE = 1e-3
# A tolerance set by the statistics: the sharpness's sampling standard error over a 1,000-image
# set is 3-6 % of the value on this walk (sharpness_se, 20 batches, batch norm in "eval" mode,
# its first 12 steps), and a residual bound of 1e-2 left the value within 5.3e-4 of the tight
# one (a pilot of 20 steps): under a fiftieth of that error, where the claims need a tenth.
STATISTICAL_TOLERANCE = 1e-2
# The tolerance at which the warm start takes the issue's three products (the pilot: 3.0 per
# estimate), shown for its price: values off by up to 6 %, more than a standard error.
THREE_PRODUCT_TOLERANCE = 1e-1
ISSUE_TARGET_PRODUCTS = 3.0

WAYS: dict[str, dict[str, Any]] = {
    "cold": {"sharpness_warm_start": False},
    "warm": {},
    "warm-loose": {"sharpness_tolerance": LOOSE_TOLERANCE},
    "cold-statistical": {"sharpness_tolerance": STATISTICAL_TOLERANCE, "sharpness_warm_start": False},
    "warm-statistical": {"sharpness_tolerance": STATISTICAL_TOLERANCE},
    "warm-three": {"sharpness_tolerance": THREE_PRODUCT_TOLERANCE},
}


def _walk() -> tuple[dict[str, list[StepRecord]], dict[str, float]]:
    config = WalkConfig()
    try:
        data = load_walk_data(config)
    except DatasetNotFoundError as error:
        pytest.skip(str(error))
    torch.manual_seed(config.seed)
    model = build_model(config.arch, data.in_channels, data.image_size, data.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    measurement = MeasurementSet(
        data.train_inputs[: config.measurement_size], data.train_targets[: config.measurement_size]
    )
    generator = torch.Generator().manual_seed(config.seed)
    trackers = {way: WalkTracker(model, measurement, sharpness_every=1, **options) for way, options in WAYS.items()}
    seconds = dict.fromkeys(WAYS, 0.0)
    for _ in range(STEPS):
        batch = torch.randint(0, data.train_inputs.shape[0], (config.batch_size,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(data.train_inputs[batch]), data.train_targets[batch]).backward()
        # The trackers measure the same step: each takes θ_t and the gradient before
        # the update and measures after it, none of them touching the model.
        for tracker in trackers.values():
            tracker.before_step(optimizer=optimizer)
        optimizer.step()
        for way, tracker in trackers.items():
            began = time.perf_counter()
            tracker.after_step()
            seconds[way] += time.perf_counter() - began
    return {way: tracker.close() for way, tracker in trackers.items()}, seconds


def test_warm_start_takes_fewer_products(benchmark: BenchmarkFixture) -> None:
    found: dict[str, tuple[dict[str, list[StepRecord]], dict[str, float]]] = {}

    def one_round() -> None:
        found["walk"] = _walk()

    benchmark.pedantic(one_round, rounds=1, warmup_rounds=0)
    records, seconds = found["walk"]
    products = {way: statistics.mean(r.sharpness_products or 0 for r in rs) for way, rs in records.items()}
    cold_values = [r.sharpness for r in records["cold"]]
    for way, rs in records.items():
        MEDIANS[GROUP]["reference" if way == "cold" else way] = seconds[way] / STEPS
        worst = max(abs(r.sharpness - c) / abs(c) for r, c in zip(rs, cold_values, strict=True) if r.sharpness and c)
        EXTRAS[GROUP][f"{way} products"] = f"{products[way]:.1f} per estimate (issue: about {ISSUE_TARGET_PRODUCTS:g})"
        EXTRAS[GROUP][f"{way} vs cold"] = f"largest relative difference {worst:.1e}"
        benchmark.extra_info[f"{way}_products_per_estimate"] = products[way]
        benchmark.extra_info[f"{way}_largest_relative_difference_from_cold"] = worst
    assert products["warm"] < products["cold"], products
    assert products["warm-statistical"] < products["cold-statistical"], products
