"""S5: isotropic noise diffuses along flat directions like √t; Hessian-shaped noise does not.

Landscape: a rotated quadratic with many flat directions (λ = 0) and a few curved ones.
GD plus Gaussian gradient noise, θ ← θ − η (∇L + ξ):

- isotropic ξ ~ N(0, σ² I) (``sgdwalk.NoisyGD``): each flat eigen-coordinate is a Gaussian
  random walk with step variance η²σ², so the mean squared flat displacement is exactly
  m(t) = η²σ² t in expectation and its log-log slope against t is 1;
- Hessian-shaped ξ ~ N(0, κH) with the same total variance (κ tr H = σ² d): the noise has no
  component along null(H), and neither has the gradient, so the flat coordinates do not move
  at all (up to float64 rounding);
- isotropic-noise GD ends at a higher loss than noise-free GD from the same start.

What is NOT true on a quadratic, though it may be hinted: "isotropic noise ends at a higher
loss than Hessian-shaped noise of the same trace". The exact stationary excess is
Σ_{λ_i>0} η v_i / (2 (2 − ηλ_i)), v_i the noise variance along eigenvector i: flat directions
cost nothing, so the isotropic noise spent on them is harmless, while Hessian-shaped noise of
the same trace concentrates all of it on curved directions. With d_flat flat and d_curved
curved directions the Hessian-shaped excess is about d / d_curved times the isotropic one
(more still, since it favours large λ where 1/(2 − ηλ) is larger). The test checks that
true ordering (Hessian-shaped higher) on the measured losses.

Statistical checks use fixed seeds (a hypothesis search has nothing to shrink in a sampling
error) and bounds of ``STANDARD_ERRORS`` exact or delta-method standard errors.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from landscapes import Quadratic, Walk, walk
from sgdwalk import windows
from suites.quick import STANDARD_ERRORS, log_log_slope, rounding_bound

if TYPE_CHECKING:
    from sgdwalk.claims.pytest_plugin import ClaimRecorder

FLAT_DIRECTIONS = 48  # N independent random walks: the squared displacement has rel. sd √(2/N) = 0.2
CURVED_EIGENVALUES = np.linspace(0.5, 2.0, 8)
LR = 0.5  # ηλ ∈ [0.25, 1]: curved directions relax within a few steps
ISOTROPIC_VARIANCE = 0.1
STEPS = 64
FIT_TIMES = (1, 2, 4, 8, 16, 32, 64)
# The loss averages are taken over the second half, where the curved directions are stationary
# up to (1 − 0.25)^64 ≈ 1e-8 of their start.
AVERAGED_STEPS = tuple(range(STEPS // 2, STEPS))
NUM_ALPHAS = 2  # only losses and distances are read


def landscape(rotation: int) -> Quadratic:
    eigenvalues = np.concatenate([np.zeros(FLAT_DIRECTIONS), CURVED_EIGENVALUES])
    shape = Quadratic(eigenvalues, rotation=rotation)
    rng = np.random.default_rng(rotation)
    return Quadratic(
        eigenvalues, rotation=rotation, start=shape.eigenvectors @ rng.uniform(-1.0, 1.0, eigenvalues.size)
    )


def flat_displacements(quadratic: Quadratic, result: Walk) -> np.ndarray:
    """Q_flatᵀ (θ_t − θ_0) for every t: shape [T + 1, d_flat]."""
    flat_basis = quadratic.eigenvectors[:, quadratic.eigenvalues == 0.0]
    iterates = result.iterates.numpy()
    return (iterates - iterates[0]) @ flat_basis


def averaged_loss(result: Walk) -> float:
    records = [record for record in result.records if record.step in AVERAGED_STEPS]
    assert len(records) == len(AVERAGED_STEPS)
    return float(np.mean([record.loss_start for record in records]))


def slope_standard_error(times: tuple[int, ...], walkers: int, weights: np.ndarray) -> float:
    """Delta-method standard error of the fitted slope of log m(t).

    m(t) averages N independent squared Gaussian walks: Cov(m_s, m_t) = 2 min(s,t)² q² / N for
    unit step variance q, so Cov(log m_s, log m_t) ≈ 2 min(s,t)² / (N s t).
    """
    t = np.asarray(times, dtype=np.float64)
    covariance = 2.0 * np.minimum.outer(t, t) ** 2 / (walkers * np.outer(t, t))
    return math.sqrt(float(weights @ covariance @ weights))


@pytest.mark.claim("S5")
@pytest.mark.parametrize("rotation", [0, 1])
def test_isotropic_noise_diffuses_along_flat_directions_and_hessian_noise_does_not(
    claim: ClaimRecorder, rotation: int
) -> None:
    quadratic = landscape(rotation)
    d = quadratic.dimension
    hessian_scale = ISOTROPIC_VARIANCE * d / float(np.sum(quadratic.eigenvalues))  # κ: equal trace
    claim.setting(
        landscape="rotated quadratic",
        flat_directions=FLAT_DIRECTIONS,
        curved_eigenvalues=list(CURVED_EIGENVALUES),
        lr=LR,
        isotropic_variance=ISOTROPIC_VARIANCE,
        hessian_noise_scale=hessian_scale,
        steps=STEPS,
        rotation=rotation,
    )
    schedule = windows([(0, 1), (STEPS // 2, STEPS)])
    common: dict[str, Any] = {
        "lr": LR,
        "steps": STEPS,
        "num_alphas": NUM_ALPHAS,
        "schedule": schedule,
        "seed": rotation,
    }
    isotropic = walk(quadratic, "noisy-gd", noise_variance=ISOTROPIC_VARIANCE, **common)
    hessian_shaped = walk(quadratic, "noisy-gd", noise_covariance=hessian_scale * quadratic.hessian(), **common)
    noise_free = walk(quadratic, "gd", **common)

    # √t diffusion: the slope of log(mean squared flat displacement) against log t is 1.
    squared = np.mean(flat_displacements(quadratic, isotropic) ** 2, axis=1)
    slope, weights = log_log_slope(FIT_TIMES, squared[list(FIT_TIMES)])
    slope_error = slope_standard_error(FIT_TIMES, FLAT_DIRECTIONS, weights)
    claim.check(
        "|log-log slope of flat MSD - 1| / standard error", abs(slope - 1.0) / slope_error, STANDARD_ERRORS, "<="
    )
    level = squared[STEPS] / (LR**2 * ISOTROPIC_VARIANCE * STEPS)
    claim.check(
        "|flat MSD(T) / (eta^2 sigma^2 T) - 1| / standard error",
        abs(level - 1.0) / math.sqrt(2.0 / FLAT_DIRECTIONS),
        STANDARD_ERRORS,
        "<=",
    )
    # The tracker's distance from θ_0 contains the flat displacement (and is the iterates').
    last = isotropic.records[-1]
    flat_distance = float(np.linalg.norm(flat_displacements(quadratic, isotropic)[last.step + 1]))
    claim.check("tracked distance from init - flat displacement", last.distance_from_init - flat_distance, 0.0, ">=")

    # Hessian-shaped noise: no flat movement beyond rounding of the steps taken.
    hessian_iterates = hessian_shaped.iterates.numpy()
    travelled = float(np.sum(np.linalg.norm(np.diff(hessian_iterates, axis=0), axis=1)))
    projection_scale = travelled + 2.0 * float(np.abs(hessian_iterates).max())
    flat_drift = float(np.abs(flat_displacements(quadratic, hessian_shaped)).max())
    claim.check(
        "max flat displacement under Hessian-shaped noise / rounding bound",
        flat_drift / rounding_bound(d, projection_scale),
        1.0,
        "<=",
    )

    # Losses over the second half, each against its exact mean and standard deviation.
    isotropic_variances = np.full(d, ISOTROPIC_VARIANCE)
    hessian_variances = hessian_scale * quadratic.eigenvalues
    start = quadratic.theta.detach().numpy()
    exact_isotropic = quadratic.averaged_excess_loss_noisy_gd(start, LR, AVERAGED_STEPS, isotropic_variances)
    exact_hessian = quadratic.averaged_excess_loss_noisy_gd(start, LR, AVERAGED_STEPS, hessian_variances)
    measured_isotropic, measured_hessian = averaged_loss(isotropic), averaged_loss(hessian_shaped)
    claim.check(
        "|isotropic avg loss - exact| / exact sd",
        abs(measured_isotropic - exact_isotropic[0]) / exact_isotropic[1],
        STANDARD_ERRORS,
        "<=",
    )
    claim.check(
        "|Hessian-shaped avg loss - exact| / exact sd",
        abs(measured_hessian - exact_hessian[0]) / exact_hessian[1],
        STANDARD_ERRORS,
        "<=",
    )
    noise_free_loss = averaged_loss(noise_free)
    claim.check(
        "(isotropic - noise-free avg loss) / sd",
        (measured_isotropic - noise_free_loss) / exact_isotropic[1],
        STANDARD_ERRORS,
        ">=",
    )
    # The true ordering of the two noise shapes (see the module docstring).
    separation = (measured_hessian - measured_isotropic) / math.hypot(exact_isotropic[1], exact_hessian[1])
    claim.check("(Hessian-shaped - isotropic avg loss) / sd", separation, STANDARD_ERRORS, ">=")
