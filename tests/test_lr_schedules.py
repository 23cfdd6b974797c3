"""Learning-rate schedules against values computed by hand (in the comments)."""

from __future__ import annotations

from typing import Any

import pytest

from sgdwalk.training.config import ConfigError, WalkConfig, learning_rate_schedule
from sgdwalk.training.lr_schedules import (
    constant,
    epochs_to_steps,
    step_decay,
    trapezoid,
    triangular,
)

# The schedules do a handful of float operations on values of size ~1: a few ulps.
SCHEDULE_RTOL = 1e-12


def approx(value: float) -> object:
    return pytest.approx(value, rel=SCHEDULE_RTOL, abs=SCHEDULE_RTOL)


def test_constant() -> None:
    assert [constant(t, lr=0.1) for t in (0, 1, 999)] == [0.1, 0.1, 0.1]


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.1), (9, 0.1), (10, 0.01), (19, 0.01), (20, 0.001), (1000, 0.001)],
)
def test_step_decay_changes_at_the_milestone(step: int, expected: float) -> None:
    # lr 0.1, γ 0.1, milestones 10 and 20: ×0.1 from step 10, ×0.01 from step 20.
    assert step_decay(step, lr=0.1, gamma=0.1, milestones=(20, 10)) == approx(expected)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.1),  # bottom
        (1, 0.325),  # 0.1 + 0.9 · 1/4
        (2, 0.55),  # 0.1 + 0.9 · 2/4
        (4, 1.0),  # top after one half cycle
        (6, 0.55),  # coming down
        (8, 0.1),  # end of the first cycle
        (10, 0.55),  # second cycle: cycle = ⌊1 + 10/8⌋ = 2, x = |10/4 − 3| = 0.5
        (12, 1.0),
    ],
)
def test_triangular_smith_2017(step: int, expected: float) -> None:
    assert triangular(step, base_lr=0.1, max_lr=1.0, step_size=4) == approx(expected)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.1),
        (2, 0.55),  # the first CLR ramp: 0.1 + 0.9 · 2/4
        (4, 1.0),  # flat from the top of the ramp …
        (7, 1.0),
        (8, 1.0),  # … to the start of the anneal (12 − 4)
        (9, 0.75),  # 1 − 1/4
        (10, 0.5),
        (11, 0.25),  # the last step taken still moves
        (12, 0.0),  # final_lr at total_steps
        (50, 0.0),
    ],
)
def test_trapezoid_ramp_flat_anneal(step: int, expected: float) -> None:
    kwargs: dict[str, Any] = dict(base_lr=0.1, max_lr=1.0, ramp_steps=4, anneal_steps=4, total_steps=12, final_lr=0.0)
    assert trapezoid(step, **kwargs) == approx(expected)


def test_trapezoid_ramp_is_the_first_half_cycle_of_clr() -> None:
    for step in range(4):
        assert trapezoid(step, base_lr=0.1, max_lr=1.0, ramp_steps=4, anneal_steps=2, total_steps=10, final_lr=0.0) == (
            triangular(step, base_lr=0.1, max_lr=1.0, step_size=4)
        )


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="counted from 0"):
        constant(-1, lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        triangular(0, base_lr=0.1, max_lr=1.0, step_size=0)
    with pytest.raises(ValueError, match="exceed"):
        trapezoid(0, base_lr=0.1, max_lr=1.0, ramp_steps=6, anneal_steps=6, total_steps=10, final_lr=0.0)


def test_epochs_to_steps_rounds_and_keeps_one_step() -> None:
    assert epochs_to_steps(0.5, 8) == 4
    assert epochs_to_steps(2.0, 450) == 900
    assert epochs_to_steps(0.001, 10) == 1


def _config(**changes: Any) -> WalkConfig:
    return WalkConfig(epochs=4, track_epochs=(1,), **changes)


def test_learning_rate_schedule_converts_epochs_to_steps() -> None:
    steps_per_epoch = 8
    step_schedule = learning_rate_schedule(
        _config(lr_schedule="step", lr_milestones=(2,), lr_gamma=0.5), steps_per_epoch
    )
    assert step_schedule(15) == approx(0.1) and step_schedule(16) == approx(0.05)  # after 2 epochs = step 16

    # half cycle 0.5 epoch = 4 steps
    cyclical = learning_rate_schedule(_config(lr_schedule="cyclical", lr_max=1.0, lr_step_epochs=0.5), steps_per_epoch)
    assert [cyclical(t) for t in (0, 2, 4, 8)] == [approx(0.1), approx(0.55), approx(1.0), approx(0.1)]

    # 32 steps in all; ramp 4 steps, anneal 1 epoch = 8 steps from step 24, to 0.02
    trap = learning_rate_schedule(
        _config(lr_schedule="trapezoid", lr_max=1.0, lr_step_epochs=0.5, lr_anneal_epochs=1.0, lr_final=0.02),
        steps_per_epoch,
    )
    assert [trap(t) for t in (0, 4, 23, 24, 28, 32)] == [
        approx(0.1), approx(1.0), approx(1.0), approx(1.0), approx(0.51), approx(0.02),
    ]  # fmt: skip


def test_config_refuses_incomplete_schedules() -> None:
    with pytest.raises(ConfigError, match="needs lr_max"):
        _config(lr_schedule="cyclical")
    with pytest.raises(ConfigError, match="at least lr"):
        _config(lr_schedule="cyclical", lr_max=0.01)
    with pytest.raises(ConfigError, match="do not fit"):
        _config(lr_schedule="trapezoid", lr_max=1.0, lr_step_epochs=3.0)
