"""Hessian trace and top-k eigenvalues against dense references (eigvalsh of the autograd
Hessian, the known spectra of quadratics) and the trace's standard error against its nominal
coverage."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from sgdwalk.instrument.curvature import (
    TraceEstimate,
    TraceMethod,
    hessian_trace,
    hutch_plus_plus_trace,
    hutchinson_trace,
    lanczos_top_eigenvalues,
    top_hessian_eigenvalues,
)
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, outputs_are_losses
from sgdwalk.instrument.sharpness import top_hessian_eigenvalue
from tests.helpers import (
    FLOAT64_REORDERED,
    LANCZOS_VS_DENSE,
    assert_close,
    classification_data,
    mean_loss_function,
    mlp,
)
from tests.test_sharpness import Quadratic, quadratic_setting, rotated

TraceEstimator = Callable[[Callable[[np.ndarray], np.ndarray], int, int, np.random.Generator], TraceEstimate]

# A trace estimate with a correct standard error and a near-normal spread lies outside 4 SE
# of the truth with probability 6e-5: a fixed-seed check at 4 SE fails only on a wrong SE
# or a biased value, not by the luck of the draw.
STANDARD_ERRORS_ALLOWED = 4.0
# The nominal two-sided 95 % interval of a mean (z = 1.96).
NOMINAL_Z = 1.96
# Coverage over 200 independent seeds of a 95 % interval is binomial: sd √(0.95·0.05/200) =
# 0.015, so [0.90, 0.99] is the nominal rate ± 3 sd; the lower side also allows the t
# quantile's point of under-coverage with 30 probes (P(|t₂₉| ≤ 1.96) = 0.94).
COVERAGE_TRIALS = 200
COVERAGE_BOUNDS = (0.90, 0.99)
# The probes' standard deviation estimated from 100 probes is itself uncertain by about
# √((κ − 1)/(4·100)), 10-15 % for the kurtosis κ of a quadratic form: a ratio to the exact
# Rademacher value outside [0.6, 1.6] is a wrong formula, not noise.
STANDARD_ERROR_RATIO_BOUNDS = (0.6, 1.6)
# A spectrum whose top 5 eigenvalues hold > 99.9 % of its squared Frobenius norm: once
# Hutch++ has sketched them, the rest it samples has almost no variance.
LOW_RANK_SPECTRUM = [50.0, 30.0, 20.0, 10.0, 5.0] + [0.01] * 25
HUTCH_PLUS_PLUS_GAIN = 10.0


def network_setting() -> tuple[torch.nn.Module, torch.Tensor, MeasurementSet, np.ndarray]:
    """A float64 tanh MLP at scaled-up weights (negative curvature too) and its dense Hessian."""
    model = mlp(11, dtype=torch.float64)
    inputs, targets = classification_data(11, 24, dtype=torch.float64)
    measurement = MeasurementSet(inputs, targets, chunk_size=10)
    point = flat_parameters(model) * 3.0
    hessian = torch.autograd.functional.hessian(mean_loss_function(model, measurement), point)
    return model, point, measurement, hessian.numpy()


def rademacher_standard_deviation(matrix: np.ndarray) -> float:
    """The exact sd of zᵀAz for Rademacher z: Var = 2(‖A‖_F² − Σ A_ii²)."""
    return float(np.sqrt(2.0 * (np.sum(matrix**2) - np.sum(np.diag(matrix) ** 2))))


def single_chunk_quadratic(eigenvalues: list[float], seed: int) -> tuple[Quadratic, MeasurementSet]:
    """The quadratic of test_sharpness with its set in one chunk: one backward per product."""
    model = Quadratic(rotated(eigenvalues, seed))
    inputs = torch.randn(10, len(eigenvalues), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return model, MeasurementSet(inputs, torch.zeros(10), loss_fn=outputs_are_losses, chunk_size=10)


# ------------------------------------------------------------------------------ top-k
@pytest.mark.parametrize("reuse_graph", [True, False], ids=["one-graph", "by-chunks"])
@pytest.mark.parametrize("k", [1, 3, 6])
def test_top_k_matches_dense_eigenvalues_of_a_network(k: int, reuse_graph: bool) -> None:
    model, point, measurement, hessian = network_setting()
    dense = np.linalg.eigvalsh(hessian)
    found = top_hessian_eigenvalues(model, point, measurement, k, reuse_graph=reuse_graph)
    assert_close(found.values, dense[::-1][:k], LANCZOS_VS_DENSE, f"top {k} against eigvalsh")
    assert found.products < point.numel()  # it stopped on its criterion, not on the dimension
    assert np.all(np.abs(found.values - dense[::-1][:k]) <= found.error_bounds + 1e-12)


def test_top_k_of_a_quadratic_is_its_known_spectrum() -> None:
    eigenvalues = [9.0, 7.5, 6.0, 3.0, 2.0, 1.0, 0.5, 0.25, -0.5, -2.0, 0.1, 0.05]
    model, measurement = quadratic_setting(eigenvalues, seed=2)
    found = top_hessian_eigenvalues(model, flat_parameters(model), measurement, 4, seed=1)
    assert_close(found.values, [9.0, 7.5, 6.0, 3.0], LANCZOS_VS_DENSE, "top 4 of a known spectrum")


def test_top_one_agrees_with_the_sharpness() -> None:
    model, point, measurement, _ = network_setting()
    sharpness = top_hessian_eigenvalue(model, point, measurement)
    assert_close(top_hessian_eigenvalues(model, point, measurement, 1).values[0], sharpness, LANCZOS_VS_DENSE)


def test_lanczos_top_k_on_a_random_symmetric_matrix() -> None:
    half = np.random.default_rng(5).standard_normal((150, 150))
    matrix = (half + half.T) / 2
    found = lanczos_top_eigenvalues(lambda v: matrix @ v, np.ones(150), 5, relative_error=1e-8)
    assert_close(found.values, np.linalg.eigvalsh(matrix)[::-1][:5], LANCZOS_VS_DENSE, "top 5, residual 1e-8")


def test_top_k_refuses_what_it_cannot_find() -> None:
    with pytest.raises(ValueError, match="k must be between 1 and the number of parameters"):
        lanczos_top_eigenvalues(lambda v: v, np.ones(4), 5)
    # The identity's Krylov space is one-dimensional: one eigenvalue, however large k.
    with pytest.raises(ValueError, match="holds only 1 eigenvalues, fewer than k=2"):
        lanczos_top_eigenvalues(lambda v: 2.0 * v, np.ones(4), 2)


# ------------------------------------------------------------------------------- trace
@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_of_a_network_lies_within_its_standard_errors(method: TraceMethod) -> None:
    model, point, measurement, hessian = network_setting()
    estimate = hessian_trace(model, point, measurement, probes=100, seed=4, method=method)
    exact = float(np.trace(hessian))
    assert abs(estimate.value - exact) <= STANDARD_ERRORS_ALLOWED * estimate.standard_error, (estimate, exact)
    assert estimate.products == 100


def test_hutchinson_standard_error_is_the_exact_one() -> None:
    model, point, measurement, hessian = network_setting()
    estimate = hessian_trace(model, point, measurement, probes=100, seed=6)
    ratio = estimate.standard_error / (rademacher_standard_deviation(hessian) / np.sqrt(100))
    assert STANDARD_ERROR_RATIO_BOUNDS[0] <= ratio <= STANDARD_ERROR_RATIO_BOUNDS[1], ratio


def test_hutch_plus_plus_beats_hutchinson_on_a_low_rank_dominated_spectrum() -> None:
    model, measurement = single_chunk_quadratic(LOW_RANK_SPECTRUM, seed=7)
    point = flat_parameters(model)
    plain = hessian_trace(model, point, measurement, probes=30, seed=1)
    sketched = hessian_trace(model, point, measurement, probes=30, seed=1, method="hutch++")
    assert plain.products == sketched.products == 30
    assert sketched.standard_error * HUTCH_PLUS_PLUS_GAIN < plain.standard_error, (sketched, plain)
    exact = sum(LOW_RANK_SPECTRUM)
    for estimate in (plain, sketched):
        assert abs(estimate.value - exact) <= STANDARD_ERRORS_ALLOWED * estimate.standard_error, (estimate, exact)


def test_hutch_plus_plus_is_exact_when_its_sketch_spans_the_space() -> None:
    matrix = rotated([4.0, -1.0, 2.5, 0.5, 3.0], seed=8).numpy()
    estimate = hutch_plus_plus_trace(lambda v: matrix @ v, 5, 18, np.random.default_rng(0))
    assert_close(estimate.value, 9.0, FLOAT64_REORDERED, "a sketch of 6 spans all 5 directions")
    assert estimate.standard_error < 1e-12


@pytest.mark.parametrize(("estimator", "probes"), [(hutchinson_trace, 30), (hutch_plus_plus_trace, 90)])
def test_trace_standard_error_covers_at_its_nominal_rate(estimator: TraceEstimator, probes: int) -> None:
    """Over 200 seeds on a quadratic with a known trace (its Hessian-vector product is the
    matrix's, cheap), ±1.96 SE holds the trace about 95 % of the time. Hutch++ gets 90
    probes so that its rest, 30 probes, gives its SE the degrees of freedom Hutchinson's has."""
    eigenvalues = [15.0, 12.0, 10.0, *np.linspace(-1.0, 6.0, 97)]
    hessian = rotated(eigenvalues, seed=0).numpy()
    exact = sum(eigenvalues)
    estimates = [
        estimator(lambda v: hessian @ v, hessian.shape[0], probes, np.random.default_rng(seed))
        for seed in range(COVERAGE_TRIALS)
    ]
    rate = float(np.mean([abs(e.value - exact) <= NOMINAL_Z * e.standard_error for e in estimates]))
    assert COVERAGE_BOUNDS[0] <= rate <= COVERAGE_BOUNDS[1], f"coverage {rate} over {COVERAGE_TRIALS} seeds"


def test_trace_is_seeded_and_leaves_torch_random_state_alone() -> None:
    model, point, measurement, _ = network_setting()
    state = torch.random.get_rng_state()
    first = hessian_trace(model, point, measurement, probes=8, seed=3, method="hutch++")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert hessian_trace(model, point, measurement, probes=8, seed=3, method="hutch++") == first
    assert hessian_trace(model, point, measurement, probes=8, seed=4, method="hutch++") != first


def test_trace_refuses_too_few_probes_and_unknown_methods() -> None:
    matrix = np.eye(3)
    with pytest.raises(ValueError, match="at least 2 probes, got 1"):
        hutchinson_trace(lambda v: matrix @ v, 3, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="Hutch\\+\\+ needs at least 4 probes"):
        hutch_plus_plus_trace(lambda v: matrix @ v, 3, 3, np.random.default_rng(0))
    model, measurement = quadratic_setting([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="method must be 'hutchinson' or 'hutch\\+\\+', got 'xtrace'"):
        hessian_trace(model, flat_parameters(model), measurement, method="xtrace")  # type: ignore[arg-type]
