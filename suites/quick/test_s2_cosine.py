"""S2: the tracked consecutive-gradient cosine equals the quadratic closed form (docs/theory.md#the-cosine).

cos(g_{t−1}, g_t) = Σ c_i²λ_i²(1−ηλ_i) / sqrt(Σ c_i²λ_i² · Σ c_i²λ_i²(1−ηλ_i)²), with c the
eigen-coordinates of θ_{t−1} − θ*; in one dimension it is sign(1 − ηλ). The cosine under
test is ``record.cosine``, computed by the tracker from the gradients the optimizer used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from landscapes import Quadratic, walk
from suites.quick import FLOAT64_EPS, WorstCase, rotation_seeds, rounding_bound, run_property, signed_offsets

if TYPE_CHECKING:
    from sgdwalk.claims.pytest_plugin import ClaimRecorder

STEPS = 3  # two cosines per example (the first record has no previous gradient)
NUM_ALPHAS = 2  # the cosine does not depend on the grid; two points keep examples cheap
# ηλ is kept this far from 1: at ηλ = 1 a component vanishes after one step, and a gradient
# made only of such components would be zero (its cosine undefined, reported as 0).
ONE_STEP_MARGIN = 0.05


@st.composite
def cosine_cases(draw: st.DrawFn) -> tuple[Quadratic, float]:
    """Any real spectrum (zero and negative eigenvalues too) with ηλ in [−1, 2.5]."""
    dimension = draw(st.integers(1, 5))
    lr = draw(st.floats(0.05, 1.0))
    curved = st.one_of(
        st.floats(-1.0, -0.05), st.floats(0.05, 1.0 - ONE_STEP_MARGIN), st.floats(1.0 + ONE_STEP_MARGIN, 2.5)
    )
    product = st.one_of(curved, st.just(0.0))
    # The first direction is curved, so the gradient is never zero (its cosine would be undefined).
    products = np.array([draw(curved), *draw(st.lists(product, min_size=dimension - 1, max_size=dimension - 1))])
    minimizer = draw(st.lists(st.floats(-2.0, 2.0), min_size=dimension, max_size=dimension))
    rotation = draw(rotation_seeds)
    shape = Quadratic(products / lr, rotation=rotation)
    start = np.asarray(minimizer) + shape.eigenvectors @ np.array(draw(signed_offsets(dimension)))
    return Quadratic(products / lr, rotation=rotation, minimizer=minimizer, start=start), lr


def cosine_rounding_bound(quadratic: Quadratic, lr: float, before: np.ndarray, after: np.ndarray) -> float:
    """Bound on |tracked − closed-form cosine| from float64 rounding.

    Each gradient H(θ − θ*) is off by δ = rounding of a d-term product of size ‖H‖‖θ − θ*‖,
    and θ_t itself was rounded by a step of the same size times (1 + η‖H‖); a cosine moves
    by at most 2δ/‖g‖ per perturbed vector.
    """
    d = quadratic.dimension
    lambda_max = float(np.abs(quadratic.eigenvalues).max())
    bound = 0.0
    for theta in (before, after):
        gradient_norm = float(np.linalg.norm(quadratic.gradient(theta)))
        offset = float(np.linalg.norm(theta - quadratic.stationary_point)) + float(np.linalg.norm(theta))
        delta = rounding_bound(d, (1.0 + lr * lambda_max) * lambda_max * offset)
        bound += 2.0 * delta / gradient_norm
    return bound


@pytest.mark.claim("S2")
def test_tracked_cosine_equals_closed_form(claim: ClaimRecorder) -> None:
    claim.setting(
        landscape="random rotated quadratic, any spectrum", dimension="1-5", eta_lambda="[-1, 2.5]", steps=STEPS
    )

    @given(case=cosine_cases())
    def examples(worst: WorstCase, case: tuple[Quadratic, float]) -> None:
        quadratic, lr = case
        result = walk(quadratic, "gd", lr=lr, steps=STEPS, num_alphas=NUM_ALPHAS)
        iterates = result.iterates.numpy()
        error_over_bound = 0.0
        for record in result.records[1:]:
            t = record.step
            assert record.cosine is not None
            exact = quadratic.gd_gradient_cosine(iterates[t - 1], lr)
            bound = cosine_rounding_bound(quadratic, lr, iterates[t - 1], iterates[t])
            error_over_bound = max(error_over_bound, abs(record.cosine - exact) / bound)
        worst.check("max |tracked cosine - closed form| / rounding bound", error_over_bound, 1.0, "<=")
        worst.check("first record has no cosine (1 = yes)", int(result.records[0].cosine is None), 1, ">=")

    run_property(claim, examples)


@pytest.mark.claim("S2")
def test_one_dimensional_cosine_is_the_sign_of_one_minus_eta_lambda(claim: ClaimRecorder) -> None:
    claim.setting(landscape="1-d quadratic", eta_lambda="(0, 1) and (1, 2)", steps=2)

    @given(
        product=st.one_of(st.floats(0.05, 1.0 - ONE_STEP_MARGIN), st.floats(1.0 + ONE_STEP_MARGIN, 1.95)),
        lr=st.floats(0.05, 1.0),
        start=st.floats(0.5, 2.0),
    )
    def examples(worst: WorstCase, product: float, lr: float, start: float) -> None:
        quadratic = Quadratic([product / lr], start=[start])
        result = walk(quadratic, "gd", lr=lr, steps=2, num_alphas=NUM_ALPHAS)
        sign = float(np.sign(1.0 - product))
        # Two 1-element vectors: the cosine is their sign product up to a couple of ulps.
        error = max(abs(record.cosine - sign) for record in result.records[1:] if record.cosine is not None)
        worst.check("max |cosine - sign(1 - eta*lambda)| in ulps", error / FLOAT64_EPS, 4.0, "<=")

    run_property(claim, examples)
