"""S8: the instrument's Hessian trace (Hutch++) and top-k eigenvalues on a quadratic are its
known spectrum.

Landscape: a rotated quadratic with five well-separated large eigenvalues, the rest spread
over [−1, 3] (negative curvature included), so Hutch++'s sketch has a top subspace to catch
and its deflated rest is a sum of many comparable terms (near-normal). The products go
through the model (``sgdwalk.instrument.curvature``'s Hessian-vector products), as on a
network; the answers are the landscape's eigenvalues.

- Top-k: each of the k largest Ritz values lies within Lanczos's stopping tolerance
  (``SHARPNESS_RELATIVE_ERROR`` of itself, plus float64 rounding) of the exact eigenvalue,
  and within its own reported error bound.
- Trace: over ``SEEDS`` probe seeds the interval value ± t·SE holds the exact trace at its
  nominal rate. Hutch++'s SE is Hutchinson's over its rest of ``PROBES`` / 3 probes (given
  the sketch, which leaves the estimate unbiased whatever it is), so its quantile is
  Student's t with rest − 1 degrees of freedom; and the mean of the estimates over the seeds
  is the exact trace within ``STANDARD_ERRORS`` of that mean.

Fixed seeds, no hypothesis: the statistics are rates and means over seeds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pytest
from scipy.stats import t as student_t

from landscapes import Quadratic
from sgdwalk.instrument.curvature import hessian_trace, top_hessian_eigenvalues
from sgdwalk.instrument.tolerances import SHARPNESS_RELATIVE_ERROR
from suites.quick import STANDARD_ERRORS, rounding_bound

if TYPE_CHECKING:
    from sgdwalk.claims.pytest_plugin import ClaimRecorder

EIGENVALUES = np.concatenate([[12.0, 9.0, 7.0, 5.5, 4.5], np.linspace(-1.0, 3.0, 27)])
ROTATION = 3
TOP_K = 5
PROBES = 30  # Hutch++: 10 sketch, 10 exact products on the sketch, 10 Hutchinson probes of the rest
SEEDS = 200
NOMINAL_COVERAGE = 0.95
# Coverage over 200 seeds is binomial with sd √(0.95·0.05/200) = 0.015: [0.90, 0.99] is the
# nominal rate ± 3 sd (the t quantile already accounts for the rest's 9 degrees of freedom).
COVERAGE_BAND = (0.90, 0.99)


def landscape() -> Quadratic:
    return Quadratic(EIGENVALUES, rotation=ROTATION)


def rest_probes(probes: int) -> int:
    """Hutch++'s Hutchinson probes of the deflated rest (``curvature.hutch_plus_plus_trace``)."""
    return probes - 2 * (probes // 3)


@pytest.mark.claim("S8")
def test_trace_and_top_eigenvalues_are_the_known_spectrum(claim: ClaimRecorder) -> None:
    quadratic = landscape()
    point, measurement = quadratic.theta.detach(), quadratic.measurement_set()
    exact_top = np.sort(EIGENVALUES)[::-1][:TOP_K]
    exact_trace = float(EIGENVALUES.sum())
    quantile = float(student_t.ppf(0.5 + NOMINAL_COVERAGE / 2, rest_probes(PROBES) - 1))
    claim.setting(
        landscape="rotated quadratic",
        eigenvalues=[float(value) for value in EIGENVALUES],
        rotation=ROTATION,
        top_k=TOP_K,
        trace_method="hutch++",
        probes=PROBES,
        probe_seeds=SEEDS,
        interval_quantile=quantile,
    )

    top = top_hessian_eigenvalues(quadratic, point, measurement, TOP_K, seed=0)
    scale = float(np.abs(EIGENVALUES).max())
    allowed = SHARPNESS_RELATIVE_ERROR * np.abs(exact_top) + rounding_bound(quadratic.dimension, scale)
    claim.check(
        "max |top-k - exact| / Lanczos tolerance", float(np.max(np.abs(top.values - exact_top) / allowed)), 1.0, "<="
    )
    claim.check(
        "max |top-k - exact| / (own error bound + rounding)",
        float(np.max(np.abs(top.values - exact_top) / (top.error_bounds + rounding_bound(quadratic.dimension, scale)))),
        1.0,
        "<=",
    )

    estimates = [
        hessian_trace(quadratic, point, measurement, probes=PROBES, seed=seed, method="hutch++")
        for seed in range(SEEDS)
    ]
    values = np.array([estimate.value for estimate in estimates])
    errors = np.array([estimate.standard_error for estimate in estimates])
    coverage = float(np.mean(np.abs(values - exact_trace) <= quantile * errors))
    claim.check("trace: coverage of value +- t*SE", coverage, COVERAGE_BAND[0], ">=")
    claim.check("trace: coverage of value +- t*SE (upper)", coverage, COVERAGE_BAND[1], "<=")
    pooled_error = float(np.std(values, ddof=1)) / math.sqrt(SEEDS)
    claim.check(
        "|mean trace over seeds - exact| / its standard error",
        abs(float(values.mean()) - exact_trace) / pooled_error,
        STANDARD_ERRORS,
        "<=",
    )
