"""S1: on a quadratic, GD multiplies each eigen-coordinate by (1 − ηλ) per step.

The run is a real torch.optim.SGD loop on the full batch, measured by the WalkTracker; its
iterates are projected on the landscape's eigenvectors and compared with the factor
(1 − ηλ_i), and the tracker's own numbers (loss, distance from θ_0) are compared with the
exact loss and distances of those iterates. Regimes (docs/theory.md#gd-on-a-quadratic): monotone for ηλ < 1, sign
flips for 1 < ηλ < 2, growth for ηλ > 2, which the tracker must report as a divergence
once the loss overflows, with every record it kept finite.

Two divergence regimes: an abrupt one (ηλ ~ 1e6: the loss jumps past float64's max in one
step) and a gradual one (ηλ ∈ [2.1, 6]: the last sound segments have finite losses near
float64's max, where the floor's parabola fit must not overflow).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from landscapes import Quadratic, walk
from suites.quick import WorstCase, rotation_seeds, rounding_bound, run_property, signed_offsets

if TYPE_CHECKING:
    from sgdwalk.claims.pytest_plugin import ClaimRecorder

# ηλ ranges, each kept 0.05-0.1 away from the regime boundaries 1 and 2 so a component's
# ratio c_{t+1}/c_t sits far from the boundary values 0, −1 compared with float64 rounding.
REGIMES: dict[str, tuple[float, float]] = {
    "monotone": (0.05, 0.9),
    "sign flips": (1.1, 1.9),
    "divergent": (2.1, 3.0),
}
# Few steps: enough to see each factor repeat, few enough that a factor 0.1 per step keeps
# every coordinate (≥ 0.5 · 0.1³) far above rounding of the others (≤ ~1e-14).
STEPS = 3
# The two-point grid (α = 0, 0.5): this check reads the iterates and the segment's α = 0.
NUM_ALPHAS = 2
FLOAT64_MAX = float(np.finfo(np.float64).max)


@st.composite
def damping_cases(draw: st.DrawFn) -> tuple[Quadratic, float, list[str]]:
    dimension = draw(st.integers(1, 4))
    lr = draw(st.floats(0.05, 1.0))
    regimes = draw(st.lists(st.sampled_from(sorted(REGIMES)), min_size=dimension, max_size=dimension))
    products = [draw(st.floats(*REGIMES[name])) for name in regimes]
    minimizer = draw(st.lists(st.floats(-2.0, 2.0), min_size=dimension, max_size=dimension))
    offsets = np.array(draw(signed_offsets(dimension)))
    rotation = draw(rotation_seeds)
    shape = Quadratic(np.array(products) / lr, rotation=rotation, minimizer=minimizer)
    start = np.asarray(minimizer) + shape.eigenvectors @ offsets
    return Quadratic(np.array(products) / lr, rotation=rotation, minimizer=minimizer, start=start), lr, regimes


def ratio_in_regime(ratio: float, regime: str) -> bool:
    if regime == "monotone":
        return 0.0 < ratio < 1.0
    if regime == "sign flips":
        return -1.0 < ratio < 0.0
    return ratio < -1.0


@pytest.mark.claim("S1")
def test_each_eigen_coordinate_is_damped_by_one_minus_eta_lambda(claim: ClaimRecorder) -> None:
    claim.setting(landscape="random rotated quadratic", dimension="1-4", eta_lambda=REGIMES, steps=STEPS)

    @given(case=damping_cases())
    def examples(worst: WorstCase, case: tuple[Quadratic, float, list[str]]) -> None:
        quadratic, lr, regimes = case
        result = walk(quadratic, "gd", lr=lr, steps=STEPS, num_alphas=NUM_ALPHAS)
        iterates = result.iterates.numpy()
        coordinates = np.array([quadratic.eigen_coordinates(theta) for theta in iterates])
        factors = quadratic.gd_damping_factors(lr)
        d, lambda_max = quadratic.dimension, float(np.abs(quadratic.eigenvalues).max())
        minimizer_norm = float(np.linalg.norm(quadratic.stationary_point))

        error_over_bound, regime_violations = 0.0, 0
        for t in range(STEPS):
            scale = (1.0 + lr * lambda_max) * (
                float(np.linalg.norm(iterates[t]) + np.linalg.norm(iterates[t + 1])) + 2.0 * minimizer_norm
            )
            error = np.abs(coordinates[t + 1] - factors * coordinates[t])
            error_over_bound = max(error_over_bound, float(error.max()) / rounding_bound(d, scale))
            ratios = coordinates[t + 1] / coordinates[t]
            regime_violations += sum(
                not ratio_in_regime(float(r), name) for r, name in zip(ratios, regimes, strict=True)
            )
        worst.check("max |c_{t+1} - (1-eta*lambda) c_t| / float64 rounding bound", error_over_bound, 1.0, "<=")
        worst.check("steps whose ratio c_{t+1}/c_t leaves its regime", regime_violations, 0, "<=")

        # The tracker watched these very iterates: its loss and distances are theirs.
        worst.check(
            "records missing or run stopped (count)", abs(len(result.records) - STEPS) + result.diverged, 0, "<="
        )
        mismatch = 0.0
        for t, record in enumerate(result.records):
            offset_norm = float(np.linalg.norm(iterates[t] - quadratic.stationary_point))
            loss_scale = 0.5 * lambda_max * offset_norm**2
            loss_error = abs(record.loss_start - quadratic.loss(iterates[t])) / rounding_bound(d, loss_scale)
            distance = float(np.linalg.norm(iterates[t + 1] - iterates[0]))
            distance_error = abs(record.distance_from_init - distance) / rounding_bound(d, distance + 1.0)
            mismatch = max(mismatch, loss_error, distance_error)
        worst.check("max |tracker loss, distance - exact| / rounding bound", mismatch, 1.0, "<=")

    run_property(claim, examples)


def divergent_cases(top_products: tuple[float, float]) -> st.SearchStrategy[tuple[Quadratic, float, int]]:
    """A quadratic whose top eigendirection has ηλ in ``top_products`` (> 2), started so that
    λc² (the quantity float64 must hold) overflows between step k − 1 and step k."""

    @st.composite
    def cases(draw: st.DrawFn) -> tuple[Quadratic, float, int]:
        dimension = draw(st.integers(1, 4))
        lr = draw(st.floats(0.05, 1.0))
        top_product = draw(st.floats(*top_products))
        others = draw(st.lists(st.floats(0.05, 1.9), min_size=dimension - 1, max_size=dimension - 1))
        overflow_step = draw(st.integers(1, 4))
        eigenvalues = np.array([top_product, *others]) / lr
        rotation = draw(rotation_seeds)
        growth = abs(1.0 - top_product)
        # λc² = max at c_of; c_0 = c_of / growth^(k − ½) puts c_{k−1} a factor √growth below it
        # and c_k a factor √growth above. (Partial sums of θᵀHθ are bounded by λc², Cauchy-Schwarz.)
        overflow_offset = math.sqrt(FLOAT64_MAX / eigenvalues[0])
        offsets = np.ones(dimension)
        offsets[0] = overflow_offset / growth ** (overflow_step - 0.5)
        shape = Quadratic(eigenvalues, rotation=rotation)
        return Quadratic(eigenvalues, rotation=rotation, start=shape.eigenvectors @ offsets), lr, overflow_step

    return cases()


def check_divergence(worst: WorstCase, quadratic: Quadratic, lr: float, overflow_step: int) -> None:
    """The run must end in a reported divergence, with every kept record finite."""
    try:
        result = walk(quadratic, "gd", lr=lr, steps=overflow_step + 5, num_alphas=NUM_ALPHAS)
    except Exception as error:  # "no crash" is part of the claim: a raise is measured, not hidden
        worst.check("runs that raised instead of reporting a divergence", 1, 0, "<=")
        raise AssertionError(f"the run raised {type(error).__name__}: {error}") from error
    worst.check("runs that raised instead of reporting a divergence", 0, 0, "<=")
    worst.check("start loss finite (1 = yes)", int(math.isfinite(result.minibatch_losses[0])), 1, ">=")
    worst.check("divergence reported (1 = yes)", int(result.diverged), 1, ">=")
    # The loss at θ_k is infinite, so the tracker stops at the latest in step k's before_step.
    worst.check("steps taken after the loss overflowed", result.steps_taken - overflow_step, 1, "<=")
    non_finite = sum(
        not math.isfinite(value)
        for record in result.records
        for value in (*record.as_dict().values(), *record.segment_losses)
        if isinstance(value, float)
    )
    worst.check("NaN or inf values in the records", non_finite, 0, "<=")
    # Segments 0 … k − 2 lie where the loss is finite: each must be kept.
    worst.check("sound segments lost before the divergence", overflow_step - 1 - len(result.records), 0, "<=")


# ηλ > 2 by a modest factor: the loss climbs geometrically through values near float64's max.
GRADUAL = (2.1, 6.0)
# ηλ ~ 1e6-1e8: the loss jumps from ≤ max/1e6 to overflow in one step (a far too large lr).
ABRUPT = (1e6, 1e8)


@pytest.mark.claim("S1")
def test_gradual_divergence_is_reported_by_the_tracker_without_nan(claim: ClaimRecorder) -> None:
    claim.setting(
        landscape="random rotated quadratic", dimension="1-4", eta_lambda_max=GRADUAL, loss_overflow_step="1-4"
    )

    @settings(phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
    @given(case=divergent_cases(GRADUAL))
    def examples(worst: WorstCase, case: tuple[Quadratic, float, int]) -> None:
        check_divergence(worst, *case)

    run_property(claim, examples)


@pytest.mark.claim("S1")
def test_abrupt_divergence_is_reported_by_the_tracker_without_nan(claim: ClaimRecorder) -> None:
    claim.setting(
        landscape="random rotated quadratic", dimension="1-4", eta_lambda_max=ABRUPT, loss_overflow_step="1-4"
    )

    @given(case=divergent_cases(ABRUPT))
    def examples(worst: WorstCase, case: tuple[Quadratic, float, int]) -> None:
        check_divergence(worst, *case)

    run_property(claim, examples)
