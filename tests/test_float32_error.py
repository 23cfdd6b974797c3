"""benchmarks/float32_error.py: its error arithmetic on hand-made segments, and one tiny real
measurement on the CPU (float64 must differ from float32, by float32's rounding only)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import float32_error as fe
from sgdwalk.instrument.segment import alpha_grid
from sgdwalk.instrument.tolerances import BARRIER_RELATIVE_TOLERANCE, FLOOR_RELATIVE_TOLERANCE

# Differences of 1e-7 between numbers of order 1 keep about 9 significant digits in float64.
PERTURBATION_RTOL = 1e-6
ALPHAS = alpha_grid(4)  # 0, 0.25, 0.5, 0.75, then α = 1
# A valley with its floor at α = 0.5 and no barrier.
REFERENCE = np.array([1.0, 0.8, 0.6, 0.7, 0.9])


def test_errors_of_a_perturbed_valley_are_the_hand_computed_ones() -> None:
    perturbed = REFERENCE + np.array([2e-7, 0.0, -1e-7, 0.0, 0.0])
    error = fe.segment_error(ALPHAS, perturbed, REFERENCE)
    # The largest relative change: 2e-7 on the loss 1.0 at α = 0 (1e-7 / 0.6 at α = 0.5 is less).
    assert math.isclose(error.loss_relative, 2e-7, rel_tol=PERTURBATION_RTOL)
    # Height L(0) − floor: 0.4 against 0.4 + 2e-7 + 1e-7.
    assert math.isclose(error.height_absolute, 3e-7, rel_tol=PERTURBATION_RTOL)
    assert error.height_relative is not None and math.isclose(
        error.height_relative, 3e-7 / 0.4, rel_tol=PERTURBATION_RTOL
    )
    # Barrier excess (0.8 − 1.0) / 1.0 against (0.8 − (1 + 2e-7)) / (1 + 2e-7).
    assert math.isclose(
        error.barrier_excess_relative, abs(-0.2 - (0.8 - 1.0000002) / 1.0000002), rel_tol=PERTURBATION_RTOL
    )
    # Floor dip (0.9 − 0.6) / 0.9 against (0.9 − (0.6 − 1e-7)) / 0.9.
    assert math.isclose(error.floor_dip_relative, 1e-7 / 0.9, rel_tol=PERTURBATION_RTOL)
    assert not error.barrier_flag_differs and not error.interior_floor_flag_differs


def test_a_flag_that_float32_decides_otherwise_is_counted() -> None:
    """An interior point level with the higher end in float64, just above the barrier
    tolerance in float32: the instrument's barrier decision flips."""
    level = np.array([1.0, 1.0, 0.9, 0.95, 0.98])
    above = level.copy()
    above[1] += 2 * BARRIER_RELATIVE_TOLERANCE
    error = fe.segment_error(ALPHAS, above, level)
    assert error.barrier_flag_differs
    assert math.isclose(error.barrier_excess_relative, 2 * BARRIER_RELATIVE_TOLERANCE, rel_tol=PERTURBATION_RTOL)
    result = fe.summary([error, fe.segment_error(ALPHAS, level, level)])
    assert result["barrier_flags_differing"] == 1
    assert math.isclose(result["barrier_error_over_tolerance"], 2.0, rel_tol=PERTURBATION_RTOL)
    assert not result["barrier_tolerance_safe"] and result["floor_tolerance_safe"]
    assert result["floor_tolerance"] == FLOOR_RELATIVE_TOLERANCE


def test_a_tiny_measurement_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "float32-error.json"
    assert fe.main(["--device", "cpu", "--tiny", "--archs", "mlp", "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))["archs"]["mlp"]
    assert result["segments"] == fe.TINY.segments
    # Float64 differs from float32 (it is another precision), by float32's rounding: a few
    # units of 2**-24 ≈ 6e-8 relative, far below a loss's own scale.
    assert 0 < result["max_loss_relative_error"] < 1e-5
    assert "barrier:" in capsys.readouterr().out
