"""S9: the gradient noise scale B_simple measured on the noisy quadratic is its closed form.

Landscape: a ``NoisyQuadratic`` population of ``POPULATION`` shifts (its covariance made exact)
at a point off its minimizer, where the mean gradient is G = H(θ − c̄) and one sample's
gradient covariance is Σ = ``gradient_noise_covariance()`` (over the population, exact). The
closed form is B* = tr(Σ)/|G|². Each seed draws a measurement set of ``SAMPLES`` shifts with
replacement from the population: its per-sample gradients are then independent with mean G
and covariance Σ, which is what ``gradient_noise_scale``'s unbiased estimators of tr(Σ) and
|G|² assume.

- Over ``SEEDS`` seeds the interval B ± 1.96·SE (the delete-a-part jackknife over 20 parts)
  holds B* at about its nominal rate.
- The mean of B over the seeds is B* within ``STANDARD_ERRORS`` of that mean. B is a ratio,
  biased at second order: relatively about Var(|Ĝ|²)/|G|⁴ ≈ 4 GᵀΣG/(n|G|⁴) ≤ 4 λ_max(Σ)/(n|G|²),
  about 0.5 % here (λ_max(Σ) ≈ σ²·4 = 4, |G|² ≈ 3.0, n = 1024), against a standard error of
  the mean of about 0.5 % (a per-seed relative SE of ~7 %, over √200).
- The SEs mean what they say: their mean over the seeds is the seeds' spread of B within
  ``ERROR_RATIO_BAND``.

Fixed seeds, no hypothesis: the statistics are rates and means over seeds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from landscapes import NoisyQuadratic
from sgdwalk import MeasurementSet, outputs_are_losses
from sgdwalk.instrument.gradient_noise import gradient_noise_scale
from suites.quick import STANDARD_ERRORS

if TYPE_CHECKING:
    from sgdwalk.claims.pytest_plugin import ClaimRecorder

EIGENVALUES = (4.0, 2.0, 1.0, 0.5, 0.25, 0.0)  # a flat direction: no noise and no gradient along it
NOISE_SCALE = 1.0
POPULATION = 8192
SAMPLES = 1024  # n ≫ B* ≈ 2.6: |G|² is resolved, where the jackknife's first-order error means what it says
OFFSET = (0.3, 0.5, 0.6, 0.8, 1.0, 1.0)  # θ − c̄ in the eigenbasis
SEEDS = 200
NOMINAL_Z = 1.96
# Coverage over 200 seeds is binomial with sd 0.015: [0.905, 0.995] is the nominal 0.95 ± 3 sd;
# the lower end is taken to 0.88 for the jackknife's 19 degrees of freedom (P(|t₁₉| ≤ 1.96) =
# 0.935, less 3 sd).
COVERAGE_BAND = (0.88, 0.99)
# The sd of 200 values is itself uncertain by 1/√(2·199) = 5 % (more for a skewed ratio), and
# the jackknife's SE by ~16 % per seed but ~1 % averaged: a mean SE outside [0.8, 1.25] of
# the spread is a wrong error formula, not noise.
ERROR_RATIO_BAND = (0.8, 1.25)


def population() -> NoisyQuadratic:
    shape = NoisyQuadratic(EIGENVALUES, POPULATION, NOISE_SCALE, seed=9, rotation=9, exact_covariance=True)
    start = shape.minimizer + shape.eigenvectors @ np.array(OFFSET)
    return NoisyQuadratic(EIGENVALUES, POPULATION, NOISE_SCALE, seed=9, rotation=9, exact_covariance=True, start=start)


def drawn_set(landscape: NoisyQuadratic, seed: int) -> MeasurementSet:
    """``SAMPLES`` shifts drawn with replacement: independent per-sample gradients."""
    indices = np.random.default_rng(seed).integers(0, landscape.num_samples, SAMPLES)
    return MeasurementSet(
        landscape.shift_tensor[torch.from_numpy(indices)].clone(),
        torch.zeros(SAMPLES, dtype=torch.float64),
        loss_fn=outputs_are_losses,
        chunk_size=SAMPLES,
    )


@pytest.mark.claim("S9")
def test_gradient_noise_scale_is_its_closed_form(claim: ClaimRecorder) -> None:
    landscape = population()
    point = landscape.theta.detach()
    gradient = landscape.hessian_matrix @ (point.numpy() - landscape.minimizer)
    exact = float(np.trace(landscape.gradient_noise_covariance())) / float(gradient @ gradient)
    claim.setting(
        landscape="noisy quadratic",
        eigenvalues=list(EIGENVALUES),
        noise_scale=NOISE_SCALE,
        population=POPULATION,
        samples=SAMPLES,
        offset=list(OFFSET),
        sample_seeds=SEEDS,
        exact_b_simple=exact,
    )
    measured = [gradient_noise_scale(landscape, point, drawn_set(landscape, seed)) for seed in range(SEEDS)]
    values = np.array([scale.b_simple for scale in measured])
    errors = np.array([scale.standard_error for scale in measured])

    coverage = float(np.mean(np.abs(values - exact) <= NOMINAL_Z * errors))
    claim.check("coverage of B_simple +- 1.96 SE", coverage, COVERAGE_BAND[0], ">=")
    claim.check("coverage of B_simple +- 1.96 SE (upper)", coverage, COVERAGE_BAND[1], "<=")
    spread = float(np.std(values, ddof=1))
    claim.check(
        "|mean B_simple over seeds - exact| / its standard error",
        abs(float(values.mean()) - exact) / (spread / math.sqrt(SEEDS)),
        STANDARD_ERRORS,
        "<=",
    )
    ratio = float(errors.mean()) / spread
    claim.check("mean SE / sd of B_simple over seeds", ratio, ERROR_RATIO_BAND[0], ">=")
    claim.check("mean SE / sd of B_simple over seeds (upper)", ratio, ERROR_RATIO_BAND[1], "<=")
