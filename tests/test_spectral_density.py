"""Stochastic Lanczos quadrature against the dense spectrum of a small network's float64
Hessian (eigvalsh), and the standard error of its statistics against their nominal coverage."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from sgdwalk.instrument.curvature import rademacher_probes
from sgdwalk.instrument.spectral_density import lanczos_quadrature, spectral_density, stochastic_lanczos_quadrature
from tests.helpers import FLOAT64_REORDERED, Tolerance, assert_close
from tests.test_curvature import network_setting

SpectralFunction = Callable[[np.ndarray], np.ndarray]

# A statistic with a correct standard error and a near-normal spread lies outside 4 SE of the
# truth with probability 6e-5; the indicator's threshold sits mid-gap between two eigenvalues,
# so a quadrature node near the jump (the error the SE does not cover) is rare at 20 of 51 steps.
STANDARD_ERRORS_ALLOWED = 4.0
# The nominal two-sided 95 % interval of a mean (z = 1.96).
NOMINAL_Z = 1.96
# 200 seeds: the coverage of a 95 % interval is binomial with sd 0.015, so [0.90, 0.99] is the
# nominal rate ± 3 sd, the lower side also allowing the t quantile's under-coverage at 30
# probes (P(|t₂₉| ≤ 1.96) = 0.94) and a little quadrature bias of the indicator.
COVERAGE_TRIALS = 200
COVERAGE_BOUNDS = (0.90, 0.99)
PROBES = 30
STEPS = 20
# Eigenvalues above the threshold in the tests' indicator: mid-gap below the 5th largest.
COUNTED_ABOVE = 5
# Gauss quadrature with m nodes is exact up to degree 2m − 1: for f(x) = x a probe's value is
# zᵀHz, up to the rounding of 20 reorthogonalised Lanczos steps on entries of size ~1.
QUADRATURE_OF_A_LINE = Tolerance(1e-10, 1e-10, "Gauss quadrature is exact for degree 1; float64 Lanczos rounding")


def identity(values: np.ndarray) -> np.ndarray:
    return values


def threshold_between(eigenvalues: np.ndarray, above: int) -> float:
    """Midway between the ``above``-th and the next largest eigenvalue."""
    descending = np.sort(eigenvalues)[::-1]
    return float(0.5 * (descending[above - 1] + descending[above]))


def indicator_above(threshold: float) -> SpectralFunction:
    return lambda values: (values > threshold).astype(np.float64)


def test_trace_and_count_above_a_threshold_of_a_network() -> None:
    model, point, measurement, hessian = network_setting()
    eigenvalues = np.linalg.eigvalsh(hessian)
    density = spectral_density(model, point, measurement, probes=PROBES, steps=STEPS, seed=1)
    assert density.products == PROBES * STEPS
    assert_close(density.weights.sum(axis=1), np.ones(PROBES), FLOAT64_REORDERED, "each probe's weights sum to 1")
    trace = density.trace_of(identity)
    count = density.trace_of(indicator_above(threshold_between(eigenvalues, COUNTED_ABOVE)))
    for name, statistic, exact in (("trace", trace, eigenvalues.sum()), ("count", count, COUNTED_ABOVE)):
        error = abs(statistic.value - exact)
        assert error <= STANDARD_ERRORS_ALLOWED * statistic.standard_error, (name, statistic, exact)


def test_each_probe_of_the_trace_is_its_hutchinson_value() -> None:
    """With the same seed the probes are Hutchinson's z, and a line is integrated exactly."""
    _, _, _, hessian = network_setting()
    density = stochastic_lanczos_quadrature(lambda v: hessian @ v, hessian.shape[0], 8, STEPS, np.random.default_rng(3))
    probes = rademacher_probes(8, hessian.shape[0], np.random.default_rng(3))
    assert_close(density.per_probe(identity), np.einsum("pi,ij,pj->p", probes, hessian, probes), QUADRATURE_OF_A_LINE)


def test_a_full_krylov_space_integrates_every_function_exactly() -> None:
    """At d steps the quadrature is the probe's own spectral measure: d vᵀf(H)v = zᵀf(H)z for
    any f, here the indicator, against f(H) built from eigh."""
    _, _, _, hessian = network_setting()
    dimension = hessian.shape[0]
    values, vectors = np.linalg.eigh(hessian)
    threshold = threshold_between(values, COUNTED_ABOVE)
    density = stochastic_lanczos_quadrature(lambda v: hessian @ v, dimension, 4, dimension, np.random.default_rng(5))
    projector = (vectors * (values > threshold)) @ vectors.T
    probes = rademacher_probes(4, dimension, np.random.default_rng(5))
    expected = np.einsum("pi,ij,pj->p", probes, projector, probes)
    assert_close(density.per_probe(indicator_above(threshold)), expected, QUADRATURE_OF_A_LINE, "f(H) = projector")


def test_standard_error_covers_at_its_nominal_rate() -> None:
    """Over 200 probe seeds on the network's dense Hessian (its products are a matmul, cheap),
    ±1.96 SE holds the exact trace, and the exact count above a threshold, about 95 % of the
    time each (both statistics read from the same quadratures)."""
    _, _, _, hessian = network_setting()
    eigenvalues = np.linalg.eigvalsh(hessian)
    statistics = {
        "trace": (identity, eigenvalues.sum()),
        "count": (indicator_above(threshold_between(eigenvalues, COUNTED_ABOVE)), COUNTED_ABOVE),
    }
    covered: dict[str, list[bool]] = {name: [] for name in statistics}
    for seed in range(COVERAGE_TRIALS):
        density = stochastic_lanczos_quadrature(
            lambda v: hessian @ v, hessian.shape[0], PROBES, STEPS, np.random.default_rng(seed)
        )
        for name, (function, exact) in statistics.items():
            estimate = density.trace_of(function)
            covered[name].append(abs(estimate.value - exact) <= NOMINAL_Z * estimate.standard_error)
    rates = {name: float(np.mean(hits)) for name, hits in covered.items()}
    print(f"coverage of ±{NOMINAL_Z} SE over {COVERAGE_TRIALS} seeds: {rates}, band {COVERAGE_BOUNDS}")
    assert all(COVERAGE_BOUNDS[0] <= rate <= COVERAGE_BOUNDS[1] for rate in rates.values()), rates


def test_smoothed_density_integrates_to_one_and_matches_the_dense_one() -> None:
    _, _, _, hessian = network_setting()
    eigenvalues = np.linalg.eigvalsh(hessian)
    width = 0.05
    density = stochastic_lanczos_quadrature(
        lambda v: hessian @ v, hessian.shape[0], 100, STEPS, np.random.default_rng(2)
    )
    grid = np.linspace(eigenvalues[0] - 10 * width, eigenvalues[-1] + 10 * width, 2001)
    smoothed, error = density.smoothed(grid, width)
    assert abs(float(np.trapezoid(smoothed, grid)) - 1.0) < 1e-6
    exact = np.exp(-0.5 * ((grid[:, None] - eigenvalues[None]) / width) ** 2).sum(axis=1)
    exact /= eigenvalues.size * width * np.sqrt(2 * np.pi)
    # The Gaussian kernel is smooth on the scale of the nodes: the SE covers the rest.
    assert np.all(np.abs(smoothed - exact) <= STANDARD_ERRORS_ALLOWED * error + 1e-12)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        lanczos_quadrature(lambda v: v, np.ones(3), 0)
    with pytest.raises(ValueError, match="start vector is zero"):
        lanczos_quadrature(lambda v: v, np.zeros(3), 2)
    with pytest.raises(ValueError, match="at least one probe"):
        stochastic_lanczos_quadrature(lambda v: v, 3, 0, 2, np.random.default_rng(0))
    density = stochastic_lanczos_quadrature(lambda v: 2.0 * v, 3, 2, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="smoothing width must be positive"):
        density.smoothed([0.0], 0.0)
    # The identity's Krylov space is one vector: one node at 2 with weight 1, exact.
    assert_close(density.trace_of(identity).value, 6.0, FLOAT64_REORDERED)
    assert density.products == 2


def test_seeded_and_leaves_torch_random_state_alone() -> None:
    model, point, measurement, _ = network_setting()
    state = torch.random.get_rng_state()
    first = spectral_density(model, point, measurement, probes=3, steps=4, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    again = spectral_density(model, point, measurement, probes=3, steps=4, seed=3)
    assert np.array_equal(first.nodes, again.nodes) and np.array_equal(first.weights, again.weights)
