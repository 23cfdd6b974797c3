"""Statistics of a run's records and history that the claim checks are built from."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from sgdwalk.instrument.record import StepRecord
from sgdwalk.runs.walk_result import WalkResult


def consecutive_step_windows(records: Sequence[StepRecord]) -> list[list[StepRecord]]:
    """Records split into windows of consecutive measured steps, in step order: the walks
    the claims are about (a gap of one unmeasured step starts a new window). The figures
    cut windows by epoch instead (``sgdwalk.runs.plots.tracked_windows``)."""
    windows: list[list[StepRecord]] = []
    for record in sorted(records, key=lambda r: r.step):
        if windows and record.step == windows[-1][-1].step + 1:
            windows[-1].append(record)
        else:
            windows.append([record])
    return windows


def mean_field_standard_error(records: Sequence[StepRecord], name: str, *, correlated: bool) -> float | None:
    """The measurement's standard error of ``mean_field(records, name)`` from the steps' own
    standard errors (``{name}_se``): their mean when the steps' errors are taken as perfectly
    correlated (every step reads the same samples: an upper bound), sqrt(Σ se²) / m when
    taken as independent. None when the records carry no standard error of ``name``."""
    values = [getattr(r, f"{name}_se", None) for r in records]
    finite = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))])
    if finite.size == 0:
        return None
    return float(finite.mean()) if correlated else float(np.sqrt(np.sum(finite**2)) / finite.size)


def mean_field(records: Sequence[StepRecord], name: str) -> float:
    values = [getattr(r, name) for r in records]
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        raise ValueError(f"no finite {name} in {len(records)} records")
    return float(np.mean(finite))


def fraction(records: Sequence[StepRecord], predicate: Callable[[StepRecord], bool]) -> float:
    if not records:
        raise ValueError("no records")
    return float(np.mean([bool(predicate(r)) for r in records]))


def floor_turning_fraction(records: Sequence[StepRecord]) -> float:
    """Fraction of consecutive floor changes y_{t+1} − y_t that reverse direction.

    A floor that only descends (or only climbs) scores 0; one that goes up and down at
    every step scores 1. This is the "ups and downs" of the valley floor along the path.
    """
    floors = np.array([r.floor for r in sorted(records, key=lambda r: r.step)], dtype=np.float64)
    if floors.size < 3:
        raise ValueError("turning needs at least 3 consecutive floors")
    signs = np.sign(np.diff(floors))
    return float(np.mean(signs[1:] * signs[:-1] < 0))


def last_history(result: WalkResult, key: str) -> float:
    """The last epoch's value of a history entry (e.g. train_loss, val_accuracy)."""
    for entry in reversed(result.history):
        value = entry.get(key)
        if value is not None:
            return float(value)
    raise ValueError(f"run {result.config.result_hash} recorded no {key}")


def field_by_step(results: Sequence[WalkResult], name: str) -> dict[int, tuple[list[float], list[float]]]:
    """Record field ``name`` over runs, by step: (its finite values, the finite values of
    ``{name}_se``), at every step where some run recorded it."""
    by_step: dict[int, tuple[list[float], list[float]]] = {}
    for result in results:
        for record in result.records:
            value = getattr(record, name, None)
            if value is None or not math.isfinite(float(value)):
                continue
            values, errors = by_step.setdefault(record.step, ([], []))
            values.append(float(value))
            error = getattr(record, f"{name}_se", None)
            if error is not None and math.isfinite(float(error)):
                errors.append(float(error))
    return by_step
