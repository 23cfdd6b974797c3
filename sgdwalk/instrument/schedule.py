"""Which optimizer steps the tracker measures: every step, every k-th, or windows of steps.

A schedule is a predicate on the 0-based step index. The tracker asks it about step t and
step t+1: when t+1 is measured too, the loss at θ_{t+1} comes from that next segment.
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, SupportsIndex


class MeasurementSchedule(Protocol):
    def __call__(self, step: int) -> bool: ...


@dataclass(frozen=True)
class EveryStep:
    def __call__(self, step: int) -> bool:
        return step >= 0


@dataclass(frozen=True)
class EveryKth:
    """Steps offset, offset + k, offset + 2k, …"""

    k: int
    offset: int = 0

    def __post_init__(self) -> None:
        # A float k (2.5) would pass `k >= 1` and measure a step set nobody asked for.
        for name in ("k", "offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.offset < 0:
            raise ValueError(f"offset must be non-negative, got {self.offset}")

    def __call__(self, step: int) -> bool:
        return step >= self.offset and (step - self.offset) % self.k == 0


@dataclass(frozen=True)
class Windows:
    """Half-open windows [start, stop) of steps, e.g. the steps of tracked epochs."""

    ranges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        for start, stop in self.ranges:
            if not 0 <= start < stop:
                raise ValueError(f"a window needs 0 <= start < stop, got [{start}, {stop})")

    def __call__(self, step: int) -> bool:
        return any(start <= step < stop for start, stop in self.ranges)


@dataclass(frozen=True)
class AnyOf:
    """Measures a step when any of its schedules does."""

    schedules: tuple[MeasurementSchedule, ...]

    def __call__(self, step: int) -> bool:
        return any(schedule(step) for schedule in self.schedules)


def every_step() -> EveryStep:
    return EveryStep()


def every_kth(k: int, offset: int = 0) -> EveryKth:
    return EveryKth(k, offset)


def windows(ranges: Iterable[tuple[SupportsIndex, SupportsIndex]]) -> Windows:
    pairs = []
    for window in ranges:
        try:
            start, stop = window
        except (TypeError, ValueError):
            raise ValueError(f"a window is a (start, stop) pair of steps, got {window!r}") from None
        # operator.index refuses 2.5 where int() would silently truncate it to 2.
        pairs.append((operator.index(start), operator.index(stop)))
    return Windows(tuple(pairs))


def epoch_windows(epochs: Iterable[int], steps_per_epoch: int) -> Windows:
    """The steps of the given 1-based epochs (epoch 1 is steps 0 … steps_per_epoch − 1)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    ranges = []
    for epoch in epochs:
        if epoch < 1:
            raise ValueError(f"epochs are counted from 1, got {epoch}")
        ranges.append(((epoch - 1) * steps_per_epoch, epoch * steps_per_epoch))
    return Windows(tuple(ranges))
