"""S6: SGD's stationary loss on the noisy quadratic matches the exact discrete-time formula,
and (η, B) vs (kη, kB) agree only while ηλ is small (the SDE view breaks).

Landscape: ``NoisyQuadratic`` with 64 eigenvalues in [0.8, 1.2], 256 samples whose shifts have
covariance exactly σ² H⁺ (whitened), SGD with B samples drawn with replacement, started at
the minimizer c̄. The measured statistic is the tracker's ``loss_start`` averaged over every
second step. Its exact expectation is the average of E[L(θ_t)] − L* over those steps
(``expected_excess_loss_sgd``: no burn-in bias to bound, the transient is in the formula),
tending to Σ_j ηλ_j² s_j² / (2B(2 − ηλ_j)). Its standard deviation comes from the exact
Gaussian-noise formula (``averaged_excess_loss_sgd``), which simulated SGD on this very
landscape matches within 10% (tests/test_landscapes.py): the 4-sd bound is a ≥ 3.6-sd one.

Scaling η and B together by k keeps η/B, which is all an SDE approximation sees; the
exact ratio of stationary excess losses is Σ w_j/(2 − kηλ_j) / Σ w_j/(2 − ηλ_j): ≈ 1 for
ηλ ≪ 1, far from 1 for ηλ ~ 1.

Fixed seeds rather than hypothesis: each case is one long run whose sampling error is the
point; hypothesis would have nothing to shrink.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest

from landscapes import NoisyQuadratic, Walk, walk
from sgdwalk import every_kth
from suites.quick import STANDARD_ERRORS

if TYPE_CHECKING:
    from sgdwalk.claims.pytest_plugin import ClaimRecorder

EIGENVALUES = np.linspace(0.8, 1.2, 64)  # many modes of similar speed: one relaxation time
NUM_SAMPLES = 256
NOISE_SCALE = 1.0
SCALE_FACTOR = 2  # k in (η, B) → (kη, kB)
MEASURE_EVERY = 2  # neighbouring losses are strongly correlated; every second one is enough
NUM_ALPHAS = 2  # only loss_start is read
# (name, η, B, steps): steps cover ≥ 5 relaxation times 1/(2ηλ_min) of the slower run.
REGIMES = [
    ("small eta*lambda (<= 0.12)", 0.05, 2, 200),
    ("large eta*lambda (0.48-1.44)", 0.6, 2, 60),
]


def landscape(seed: int) -> NoisyQuadratic:
    shape = NoisyQuadratic(EIGENVALUES, NUM_SAMPLES, NOISE_SCALE, seed=seed, rotation=seed, exact_covariance=True)
    return NoisyQuadratic(
        EIGENVALUES, NUM_SAMPLES, NOISE_SCALE, seed=seed, rotation=seed, exact_covariance=True, start=shape.minimizer
    )


def measured_excess(quadratic: NoisyQuadratic, result: Walk) -> tuple[float, list[int]]:
    """Mean of the tracker's loss_start − L* over the measured steps, and those steps."""
    assert not result.diverged
    steps = [record.step for record in result.records]
    return float(np.mean([record.loss_start for record in result.records])) - quadratic.minimum_loss, steps


@pytest.mark.claim("S6")
@pytest.mark.parametrize("name, lr, batch_size, steps", REGIMES, ids=["small", "large"])
def test_stationary_loss_matches_formula_and_sde_scaling(
    claim: ClaimRecorder, name: str, lr: float, batch_size: int, steps: int
) -> None:
    quadratic = landscape(seed=0)
    claim.setting(
        landscape="noisy quadratic, whitened shifts",
        eigenvalues="64 in [0.8, 1.2]",
        samples=NUM_SAMPLES,
        regime=name,
        lr=lr,
        batch_size=batch_size,
        k=SCALE_FACTOR,
        steps=steps,
        measured_every=MEASURE_EVERY,
    )
    start = quadratic.minimizer
    averages = []
    for index, (run_lr, run_batch) in enumerate([(lr, batch_size), (SCALE_FACTOR * lr, SCALE_FACTOR * batch_size)]):
        result = walk(
            quadratic,
            "sgd",
            lr=run_lr,
            batch_size=run_batch,
            steps=steps,
            num_alphas=NUM_ALPHAS,
            schedule=every_kth(MEASURE_EVERY),
            seed=100 + index,
        )
        measured, measured_steps = measured_excess(quadratic, result)
        exact_mean, exact_sd = quadratic.averaged_excess_loss_sgd(start, run_lr, run_batch, measured_steps)
        claim.check(
            f"|measured - exact excess| / sd at (eta={run_lr:g}, B={run_batch})",
            abs(measured - exact_mean) / exact_sd,
            STANDARD_ERRORS,
            "<=",
        )
        averages.append((measured, exact_mean, exact_sd))

    (measured_1, exact_1, sd_1), (measured_k, exact_k, sd_k) = averages
    exact_ratio = exact_k / exact_1
    # Independent runs: relative errors add in quadrature.
    ratio_error = exact_ratio * math.hypot(sd_1 / exact_1, sd_k / exact_k)
    measured_ratio = measured_k / measured_1
    claim.check(
        "|measured - exact ratio (k eta, kB)/(eta, B)| / se",
        abs(measured_ratio - exact_ratio) / ratio_error,
        STANDARD_ERRORS,
        "<=",
    )
    stationary_ratio = quadratic.stationary_excess_loss_sgd(
        SCALE_FACTOR * lr, SCALE_FACTOR * batch_size
    ) / quadratic.stationary_excess_loss_sgd(lr, batch_size)
    claim.note(f"exact stationary ratio {stationary_ratio:.4f}, measured {measured_ratio:.4f} +- {ratio_error:.4f}")
    if lr * EIGENVALUES.max() * SCALE_FACTOR < 0.2:
        claim.check(
            "|measured ratio - 1| / se (SDE scaling holds)",
            abs(measured_ratio - 1.0) / ratio_error,
            STANDARD_ERRORS,
            "<=",
        )
    else:
        claim.check(
            "(measured ratio - 1) / se (SDE scaling broken)",
            (measured_ratio - 1.0) / ratio_error,
            STANDARD_ERRORS,
            ">=",
        )
