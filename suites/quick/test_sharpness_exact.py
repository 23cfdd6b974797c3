"""The sharpness estimator against the exact spectrum: Lanczos vs numpy.linalg.eigvalsh.

``sgdwalk.top_hessian_eigenvalue`` runs Hessian-vector products through the model and
Lanczos on them; on a quadratic the Hessian is known exactly, so its answer must match
``eigvalsh`` of that matrix. Both meanings are checked: "LA" (largest algebraic) and "LM"
(largest magnitude), which differ whenever a negative eigenvalue dominates.

No claim id: the registry has none for the estimator itself; the claims that read
sharpness (C10, X1) rely on this check.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from landscapes import Quadratic
from sgdwalk import top_hessian_eigenvalue
from suites.quick import rotation_seeds, rounding_bound

# The agreement asked of a float64 estimate (Lanczos stops at a residual of 1e-6 of the value, sgdwalk.instrument.tolerances).
RELATIVE_AGREEMENT = 1e-6
# "LM" is ambiguous when the two largest magnitudes belong to eigenvalues of opposite sign and
# nearly cancel; below this relative gap the example is skipped (either answer would be right).
LM_AMBIGUITY_GAP = 1e-3


@st.composite
def spectra(draw: st.DrawFn) -> tuple[Quadratic, np.ndarray]:
    dimension = draw(st.integers(10, 16))
    magnitude = draw(st.floats(1e-3, 1e3))
    unit = draw(st.lists(st.floats(-1.0, 1.0), min_size=dimension, max_size=dimension))
    # One eigenvalue of full magnitude, so the spectrum's scale is `magnitude`, of either sign.
    unit[0] = draw(st.sampled_from([-1.0, 1.0]))
    quadratic = Quadratic(magnitude * np.array(unit), rotation=draw(rotation_seeds))
    point = np.array(draw(st.lists(st.floats(-3.0, 3.0), min_size=dimension, max_size=dimension)))
    return quadratic, point


def expected_eigenvalue(hessian: np.ndarray, which: str) -> float:
    eigenvalues = np.linalg.eigvalsh(hessian)
    if which == "LA":
        return float(eigenvalues[-1])
    return float(eigenvalues[np.argmax(np.abs(eigenvalues))])


@pytest.mark.parametrize("which", ["LA", "LM"])
@given(case=spectra(), seed=st.integers(0, 2**16))
def test_top_hessian_eigenvalue_matches_eigvalsh(which: str, case: tuple[Quadratic, np.ndarray], seed: int) -> None:
    quadratic, point = case
    exact_hessian = quadratic.hessian()
    eigenvalues = np.linalg.eigvalsh(exact_hessian)
    if which == "LM":
        by_magnitude = eigenvalues[np.argsort(-np.abs(eigenvalues))]
        top, runner_up = by_magnitude[0], by_magnitude[1]
        assume(np.sign(top) == np.sign(runner_up) or abs(abs(top) - abs(runner_up)) > LM_AMBIGUITY_GAP * abs(top))
    expected = expected_eigenvalue(exact_hessian, which)
    estimate = top_hessian_eigenvalue(
        quadratic,
        torch.tensor(point),
        quadratic.measurement_set(),
        which=which,  # type: ignore[arg-type]  # hypothesis draws the choice as a plain str
        seed=seed,
    )
    # eigvalsh itself is exact only to its backward error, a few d·eps·‖H‖: an "LA" eigenvalue
    # at 0 is known to that absolute resolution and no better, whatever its relative error.
    reference_resolution = rounding_bound(quadratic.dimension, float(np.abs(eigenvalues).max()))
    bound = RELATIVE_AGREEMENT * abs(expected) + reference_resolution
    assert abs(estimate - expected) <= bound, f"{which}: |{estimate!r} - {expected!r}| > {bound:.3g}"


@pytest.mark.parametrize("which", ["LA", "LM"])
@pytest.mark.parametrize("dimension", [3, 12])
def test_top_hessian_eigenvalue_of_a_zero_hessian_is_zero(which: str, dimension: int) -> None:
    """A flat landscape (H = 0: a plateau, or a region where every unit is dead) has sharpness 0."""
    flat = Quadratic(np.zeros(dimension), rotation=1)
    estimate = top_hessian_eigenvalue(flat, flat.theta.detach(), flat.measurement_set(), which=which)  # type: ignore[arg-type]
    assert estimate == 0.0
