"""S3: a step has an interior valley floor iff ηλ_eff > 1; α* and the depth match docs/theory.md.

Along the step θ → θ − ηg the loss is a parabola with vertex α* = gᵀ∇L / (η gᵀHg) (for GD,
1/(ηλ_eff)) and depth (gᵀ∇L)² / (2 gᵀHg) below θ. The tracker sees the segment only on its
grid α = 0, 1/K, …, 1, so:

- the grid α* is the grid point nearest the true minimum over [0, 1]: within Δ/2 = 1/(2K);
- the grid floor is above the true floor by at most curvature·Δ²/8 (``grid_floor_error_bound``);
- ``floor_refined``/``alpha_star_refined`` fit a parabola through three grid points, which
  is exact for a quadratic, so they agree up to float64 rounding (bounds derived below).

The interior statement is checked where the grid can resolve it: α* ∈ [0.1, 0.9] must be
reported interior (the nearest grid point is interior and strictly lower than both ends), and
α* ∉ (0, 1) must not (the loss is monotone on the segment); the bands between are a matter
of grid resolution, not of the claim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from landscapes import NoisyQuadratic, Quadratic, SegmentParabola, walk
from landscapes.quadratic import QuadraticAnswers
from sgdwalk import DEFAULT_NUM_ALPHAS, StepRecord
from suites.quick import WorstCase, rotation_seeds, rounding_bound, run_property, signed_offsets

if TYPE_CHECKING:
    from sgdwalk.claims.pytest_plugin import ClaimRecorder

NUM_ALPHAS = DEFAULT_NUM_ALPHAS  # the authors' grid: its resolution is part of the claim
SPACING = 1.0 / NUM_ALPHAS
# Where the grid must see an interior floor: the nearest grid point to α* is interior and the
# parabola there is below both ends by ≥ a tenth of the depth, far above the tracker's 1e-7
# relative floor tolerance for the conditioning drawn here (λ_max/λ_min ≤ 100).
RESOLVED_INTERIOR = (0.1, 0.9)
# ηλ_eff ranges for GD: ≤ 1 (α* ≥ 1, no interior floor) or ≥ 1.12 (α* ≤ 0.893, resolved).
NO_FLOOR_PRODUCTS = (0.05, 1.0)
FLOOR_PRODUCTS = (1.12, 6.0)


def vertex_rounding_bounds(
    landscape: QuadraticAnswers, theta: np.ndarray, step: np.ndarray, parabola: SegmentParabola
) -> tuple[float, float]:
    """Float64 bounds on |floor_refined − floor| and |α_refined − α*|.

    Every grid loss carries an error δ (a d-term quadratic form of size ½ λ_max R², R the
    largest offset from θ* on the segment). The vertex of the parabola through three points
    Δ apart moves by ≤ 4δ/(Δ c) with c = curvature/2 its second divided difference (first
    differences err by 2δ/Δ, the second by 2δ/Δ², and |d01/c| ≤ 3Δ); its value by ≤ 5.5δ.
    Doubled for margin.
    """
    offset = float(np.linalg.norm(theta - landscape.stationary_point)) + float(np.linalg.norm(step))
    lambda_max = float(np.abs(landscape.eigenvalues).max())
    minimum = float(getattr(landscape, "minimum_loss", 0.0) or 0.0)
    delta = rounding_bound(landscape.dimension, 0.5 * lambda_max * offset**2 + abs(minimum))
    second_difference = parabola.curvature / 2.0
    return 11.0 * delta, 8.0 * delta / (SPACING * second_difference)


def check_segment(
    worst: WorstCase, landscape: QuadraticAnswers, theta: np.ndarray, end: np.ndarray, record: StepRecord
) -> None:
    """Every floor statistic of one tracked segment against the exact parabola."""
    parabola = landscape.segment_parabola(theta, end)
    floor_rounding, alpha_rounding = vertex_rounding_bounds(landscape, theta, end - theta, parabola)
    loss_rounding = floor_rounding

    alpha_star = parabola.alpha_star
    if alpha_star is not None and RESOLVED_INTERIOR[0] <= alpha_star <= RESOLVED_INTERIOR[1]:
        worst.check("resolved interior floors reported as not interior", int(not record.interior_floor), 0, "<=")
    if alpha_star is None or not 0.0 < alpha_star < 1.0:
        worst.check("monotone segments reported with an interior floor", int(record.interior_floor), 0, "<=")

    # The grid minimum is the grid point nearest the true minimum over [0, 1], up to ties: two
    # points at distances r1 < r2 from α* differ in loss by ≥ ½ f'' (r2 − r1) Δ, so a rounding-
    # level tie (2 δ) lets the farther one win only if r2 ≤ Δ/2 + 2δ / (f'' Δ).
    tie_allowance = 2.0 * loss_rounding / (parabola.curvature * SPACING) if parabola.curvature > 0.0 else SPACING / 2
    alpha_bound = SPACING / 2 + tie_allowance
    worst.check(
        "|grid alpha* - exact| / (grid spacing / 2 + tie allowance)",
        abs(record.alpha_star - parabola.alpha_floor) / alpha_bound,
        1.0,
        "<=",
    )
    grid_bound = parabola.grid_floor_error_bound(NUM_ALPHAS) + loss_rounding
    worst.check(
        "(grid floor - exact floor) / grid-resolution bound", (record.floor - parabola.floor) / grid_bound, 1.0, "<="
    )
    worst.check(
        "(exact floor - grid floor) / rounding bound", (parabola.floor - record.floor) / loss_rounding, 1.0, "<="
    )
    worst.check(
        "|height_start - exact depth| / grid-resolution bound",
        abs(record.height_start - parabola.depth) / (grid_bound + loss_rounding),
        1.0,
        "<=",
    )
    worst.check(
        "|height_end - exact| / grid-resolution bound",
        abs(record.height_end - parabola.height_end) / (grid_bound + loss_rounding),
        1.0,
        "<=",
    )
    if record.interior_floor and alpha_star is not None:
        worst.check(
            "|floor_refined - exact floor| / rounding bound",
            abs(record.floor_refined - parabola.floor) / floor_rounding,
            1.0,
            "<=",
        )
        worst.check(
            "|alpha_star_refined - exact| / rounding bound",
            abs(record.alpha_star_refined - alpha_star) / alpha_rounding,
            1.0,
            "<=",
        )


@st.composite
def gd_floor_cases(draw: st.DrawFn) -> tuple[Quadratic, float, float]:
    """A quadratic (λ ∈ [0.1, 10] or 0) and a learning rate giving a chosen ηλ_eff."""
    dimension = draw(st.integers(1, 5))
    curved = st.floats(0.1, 10.0)
    eigenvalues = [
        draw(curved),
        *draw(st.lists(st.one_of(curved, st.just(0.0)), min_size=dimension - 1, max_size=dimension - 1)),
    ]
    rotation = draw(rotation_seeds)
    shape = Quadratic(eigenvalues, rotation=rotation)
    offsets = np.array(draw(signed_offsets(dimension)))
    quadratic = Quadratic(eigenvalues, rotation=rotation, start=shape.eigenvectors @ offsets)
    start = quadratic.theta.detach().numpy()
    product = draw(st.one_of(st.floats(*NO_FLOOR_PRODUCTS), st.floats(*FLOOR_PRODUCTS)))
    lr = product / quadratic.effective_curvature(quadratic.gradient(start))
    return quadratic, lr, product


@pytest.mark.claim("S3")
def test_gd_step_floor_matches_closed_form(claim: ClaimRecorder) -> None:
    claim.setting(
        landscape="random rotated quadratic, eigenvalues in [0.1, 10] or 0",
        dimension="1-5",
        eta_lambda_eff=[NO_FLOOR_PRODUCTS, FLOOR_PRODUCTS],
        num_alphas=NUM_ALPHAS,
    )

    @given(case=gd_floor_cases())
    def examples(worst: WorstCase, case: tuple[Quadratic, float, float]) -> None:
        quadratic, lr, product = case
        result = walk(quadratic, "gd", lr=lr, steps=1, num_alphas=NUM_ALPHAS)
        (record,) = result.records
        theta, end = result.iterates.numpy()
        worst.check("interior_floor != (eta*lambda_eff > 1)", int(record.interior_floor != (product > 1.0)), 0, "<=")
        check_segment(worst, quadratic, theta, end, record)

    run_property(claim, examples)


@st.composite
def sgd_floor_cases(draw: st.DrawFn) -> tuple[NoisyQuadratic, float, int, int]:
    dimension = draw(st.integers(1, 4))
    eigenvalues = draw(st.lists(st.floats(0.1, 10.0), min_size=dimension, max_size=dimension))
    landscape = NoisyQuadratic(
        eigenvalues,
        num_samples=16,
        noise_scale=draw(st.floats(0.1, 2.0)),
        seed=draw(st.integers(0, 2**16)),
        rotation=draw(rotation_seeds),
        start=draw(st.lists(st.floats(-3.0, 3.0), min_size=dimension, max_size=dimension)),
    )
    lr = draw(st.floats(0.05, 3.0)) / max(eigenvalues)
    return landscape, lr, draw(st.integers(1, 4)), draw(st.integers(0, 2**16))


@pytest.mark.claim("S3")
def test_sgd_step_floor_matches_minibatch_closed_form(claim: ClaimRecorder) -> None:
    """With a minibatch gradient ĝ: α* = ĝᵀ∇L / (η ĝᵀHĝ) on the full-set loss."""
    claim.setting(
        landscape="noisy quadratic, 16 samples",
        dimension="1-4",
        eta_lambda_max="0.05-3",
        batch="1-4",
        num_alphas=NUM_ALPHAS,
    )

    @given(case=sgd_floor_cases())
    def examples(worst: WorstCase, case: tuple[NoisyQuadratic, float, int, int]) -> None:
        landscape, lr, batch_size, seed = case
        result = walk(landscape, "sgd", lr=lr, steps=1, batch_size=batch_size, num_alphas=NUM_ALPHAS, seed=seed)
        (record,) = result.records
        theta, end = result.iterates.numpy()
        minibatch_gradient = result.gradients[0].numpy()
        closed_form = landscape.step_parabola(theta, minibatch_gradient, lr)
        via_segment = landscape.segment_parabola(theta, end)
        if closed_form.alpha_star is not None and via_segment.alpha_star is not None:
            # θ_{t+1} is θ − ηĝ up to one rounding: the closed form and the segment agree.
            _, alpha_rounding = vertex_rounding_bounds(landscape, theta, end - theta, via_segment)
            worst.check(
                "|closed-form alpha* - segment alpha*| / rounding bound",
                abs(closed_form.alpha_star - via_segment.alpha_star) / alpha_rounding,
                1.0,
                "<=",
            )
        check_segment(worst, landscape, theta, end, record)

    run_property(claim, examples)
