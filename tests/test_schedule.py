"""Measurement schedules: which steps each one selects, and what input each refuses."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgdwalk.instrument.schedule import AnyOf, epoch_windows, every_kth, every_step, windows
from tests.helpers import measured_steps


def test_every_step() -> None:
    assert measured_steps(every_step(), 6) == [0, 1, 2, 3, 4, 5]
    assert not every_step()(-1)


def test_every_kth_by_hand() -> None:
    assert measured_steps(every_kth(3), 10) == [0, 3, 6, 9]
    assert measured_steps(every_kth(4, offset=2), 15) == [2, 6, 10, 14]
    assert measured_steps(every_kth(1), 4) == [0, 1, 2, 3]


@given(k=st.integers(1, 50), offset=st.integers(0, 50), steps=st.integers(0, 200))
def test_every_kth_is_a_python_range(k: int, offset: int, steps: int) -> None:
    assert measured_steps(every_kth(k, offset), steps) == list(range(offset, steps, k))


def test_windows_are_half_open_and_may_overlap() -> None:
    schedule = windows([(2, 4), (3, 6), (9, 10)])
    assert measured_steps(schedule, 12) == [2, 3, 4, 5, 9]
    assert measured_steps(windows([]), 5) == []
    assert measured_steps(windows([(np.int64(1), np.int64(3))]), 5) == [1, 2]


def test_epoch_windows_count_epochs_from_one() -> None:
    assert measured_steps(epoch_windows([1, 3], steps_per_epoch=4), 20) == [0, 1, 2, 3, 8, 9, 10, 11]


def test_any_of() -> None:
    schedule = AnyOf((every_kth(5), windows([(1, 3)])))
    assert measured_steps(schedule, 11) == [0, 1, 2, 5, 10]


def test_schedules_are_immutable_values() -> None:
    assert every_kth(3, 1) == every_kth(3, 1)
    assert windows([(0, 2)]) == windows(((0, 2),))
    with pytest.raises(AttributeError):
        every_kth(3).k = 4  # type: ignore[misc]  # deliberately: schedules are frozen


# -------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("k", "offset", "error", "message"),
    [
        (0, 0, ValueError, "k must be at least 1, got 0"),
        (-2, 0, ValueError, "k must be at least 1, got -2"),
        (3, -1, ValueError, "offset must be non-negative, got -1"),
        (2.5, 0, TypeError, "k must be an int, got 2.5"),
        (True, 0, TypeError, "k must be an int"),
        (3, 1.0, TypeError, "offset must be an int"),
    ],
)
def test_bad_every_kth(k: object, offset: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        every_kth(k, offset)  # type: ignore[arg-type]  # deliberately wrong type: the run-time check is under test


@pytest.mark.parametrize(
    ("ranges", "error", "message"),
    [
        ([(3, 3)], ValueError, r"0 <= start < stop, got \[3, 3\)"),
        ([(5, 2)], ValueError, r"got \[5, 2\)"),
        ([(-1, 2)], ValueError, r"got \[-1, 2\)"),
        ([(0, 2.5)], TypeError, "integer"),
        ([(0, 1, 2)], ValueError, r"a window is a \(start, stop\) pair of steps, got \(0, 1, 2\)"),
        ([3], ValueError, "a window is a"),
    ],
    ids=["empty", "reversed", "negative", "float", "triple", "scalar"],
)
def test_bad_windows(ranges: list[object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        windows(ranges)  # type: ignore[arg-type]  # deliberately wrong type: the run-time check is under test


def test_bad_epoch_windows() -> None:
    with pytest.raises(ValueError, match="epochs are counted from 1, got 0"):
        epoch_windows([0, 1], steps_per_epoch=10)
    with pytest.raises(ValueError, match="steps_per_epoch must be positive, got 0"):
        epoch_windows([1], steps_per_epoch=0)
