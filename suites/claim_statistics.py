"""The statistics of the claims table: per-seed values of named settings, gaps between them.

Each builder takes the names of the settings it reads (keys of a tier's setting table, see
``suites/tier_plan.py``) and returns a ``StatisticFunction``: from the runs of those settings,
one value per seed, and an ``Estimate`` (mean and 95 % t interval) over the seeds. The table
(``suites/claims_table.py``) binds them; ``tests/test_claim_checks.py`` pins each on
hand-made runs with known answers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from sgdwalk.claims.check import RunsBySetting, StatisticFunction
from sgdwalk.claims.statistics import Estimate, mean_with_t_interval, paired_difference
from sgdwalk.claims.window_statistics import (
    consecutive_step_windows,
    floor_turning_fraction,
    fraction,
    last_history,
    mean_field,
    mean_field_standard_error,
)
from sgdwalk.instrument.record import StepRecord
from sgdwalk.runs.runner import WalkResult

Window = Callable[[WalkResult], list[StepRecord]]


# ----------------------------------------------------------------------- windows of a run
def in_window(result: WalkResult, window: tuple[int, int]) -> list[StepRecord]:
    """The measured steps in [start, stop); ValueError when there are none."""
    start, stop = window
    records = [r for r in result.records if start <= r.step < stop]
    if not records:
        raise ValueError(f"no measured steps in {window} (diverged: {result.divergence})")
    return records


def late(result: WalkResult) -> list[StepRecord]:
    """The last window of consecutive measured steps."""
    return consecutive_step_windows(result.records)[-1]


def early(result: WalkResult) -> list[StepRecord]:
    """The first window of consecutive measured steps."""
    return consecutive_step_windows(result.records)[0]


def second_half(result: WalkResult) -> list[StepRecord]:
    """The second half of every measured step (of a GD run measured throughout)."""
    records = sorted(result.records, key=lambda r: r.step)
    return records[len(records) // 2 :]


def per_seed(runs: Sequence[WalkResult], statistic: Callable[[WalkResult], float]) -> list[float]:
    return [float(statistic(run)) for run in runs]


def history_at_update(result: WalkResult, key: str, update: int) -> float:
    """A history value at the end of the epoch that ends at ``update`` updates."""
    for entry in result.history:
        if int(entry["step"]) == update and entry.get(key) is not None:
            return float(entry[key])
    raise ValueError(f"no {key} recorded at update {update}")


# ------------------------------------------------------------------- one setting, per seed
def window_measurement_se(
    runs: Sequence[WalkResult], field: str, window: Window, *, correlated: bool
) -> tuple[float, ...] | None:
    """Per seed, the measurement's standard error of the window mean of ``field`` (None when
    the records carry none: a field measured without sampling error, or old records)."""
    errors = [mean_field_standard_error(window(run), field, correlated=correlated) for run in runs]
    return None if any(se is None for se in errors) else tuple(float(se) for se in errors if se is not None)


def with_measurement_errors(
    estimate: Estimate, parts: Sequence[tuple[Sequence[WalkResult], Window]], field: str
) -> Estimate:
    """``estimate`` with its per-seed measurement errors, both ways (see ``Estimate``): the
    errors of the windows in ``parts`` (one per setting the statistic reads), added as
    independent across settings."""
    bounds = []
    for correlated in (True, False):
        errors = [window_measurement_se(runs, field, window, correlated=correlated) for runs, window in parts]
        if any(e is None for e in errors):
            return estimate
        bounds.append(tuple(math.hypot(*per_seed) for per_seed in zip(*errors, strict=True)))
    return dataclasses.replace(estimate, measurement_se=bounds[0], measurement_se_independent=bounds[1])


def window_mean(setting: str, field: str, window: Window) -> StatisticFunction:
    """Mean of ``field`` over ``window`` of each run of ``setting``."""

    def statistic(runs: RunsBySetting) -> Estimate:
        estimate = mean_with_t_interval(per_seed(runs[setting], lambda r: mean_field(window(r), field)))
        return with_measurement_errors(estimate, [(runs[setting], window)], field)

    return statistic


def interior_floor_fraction(setting: str, window: Window) -> StatisticFunction:
    """Fraction of the window's segments whose floor lies strictly inside (0, 1)."""

    def statistic(runs: RunsBySetting) -> Estimate:
        return mean_with_t_interval(per_seed(runs[setting], lambda r: fraction(window(r), lambda s: s.interior_floor)))

    return statistic


def all_measured(result: WalkResult) -> list[StepRecord]:
    """Every measured step of the run, in every window."""
    return list(result.records)


def early_barriers(setting: str) -> StatisticFunction:
    """Number of barriers crossed in the first window, per seed."""

    def statistic(runs: RunsBySetting) -> Estimate:
        return mean_with_t_interval(per_seed(runs[setting], lambda r: sum(s.barrier for s in early(r))))

    return statistic


def late_barrier_fraction(setting: str) -> StatisticFunction:
    """Fraction of the last window's updates that cross a barrier."""

    def statistic(runs: RunsBySetting) -> Estimate:
        return mean_with_t_interval(per_seed(runs[setting], lambda r: fraction(late(r), lambda s: s.barrier)))

    return statistic


def relative_barrier_height(setting: str) -> StatisticFunction:
    """Per seed, the largest barrier height over the loss at its segment's start (0 if none)."""

    def statistic(runs: RunsBySetting) -> Estimate:
        return mean_with_t_interval(
            per_seed(
                runs[setting],
                lambda r: max((s.barrier_height / s.loss_start for s in r.records if s.barrier), default=0.0),
            )
        )

    return statistic


def sharpness_drop(setting: str) -> StatisticFunction:
    """First sharpness estimate of a run minus its last, per seed."""

    def first_and_last(result: WalkResult) -> tuple[float, float]:
        values = [r.sharpness for r in sorted(result.records, key=lambda r: r.step) if r.sharpness is not None]
        if len(values) < 2:
            raise ValueError(f"need two sharpness estimates, got {values}")
        return float(values[0]), float(values[-1])

    def statistic(runs: RunsBySetting) -> Estimate:
        pairs = [first_and_last(run) for run in runs[setting]]
        return paired_difference([first for first, _ in pairs], [last for _, last in pairs])

    return statistic


# ------------------------------------------------------------ two settings, paired by seed
def window_mean_gap(
    first: str, first_window: Window, second: str, second_window: Window, field: str
) -> StatisticFunction:
    """Mean ``field`` over a window of ``first`` minus over a window of ``second``, per seed."""

    def statistic(runs: RunsBySetting) -> Estimate:
        estimate = paired_difference(
            per_seed(runs[first], lambda r: mean_field(first_window(r), field)),
            per_seed(runs[second], lambda r: mean_field(second_window(r), field)),
        )
        return with_measurement_errors(estimate, [(runs[first], first_window), (runs[second], second_window)], field)

    return statistic


def final_gap(key: str, first: str, second: str) -> StatisticFunction:
    """``first`` − ``second`` of a run's last recorded history ``key``, per seed."""

    def statistic(runs: RunsBySetting) -> Estimate:
        return paired_difference(
            per_seed(runs[first], lambda r: last_history(r, key)),
            per_seed(runs[second], lambda r: last_history(r, key)),
        )

    return statistic


def gap_after_gd_updates(key: str, sgd: str, gd: str) -> StatisticFunction:
    """``sgd`` − ``gd`` of history ``key`` after as many updates as GD took (one per epoch)."""

    def statistic(runs: RunsBySetting) -> Estimate:
        updates = runs[gd][0].config.epochs
        return paired_difference(
            per_seed(runs[sgd], lambda r: history_at_update(r, key, updates)),
            per_seed(runs[gd], lambda r: history_at_update(r, key, updates)),
        )

    return statistic


def floor_turning_gap(sgd: str, gd: str) -> StatisticFunction:
    """Floor direction reversals: ``sgd``'s last window minus ``gd``'s, on equally many steps."""

    def pair(sgd_run: WalkResult, gd_run: WalkResult) -> float:
        sgd_window, gd_window = late(sgd_run), late(gd_run)
        length = min(len(sgd_window), len(gd_window))
        return floor_turning_fraction(sgd_window[-length:]) - floor_turning_fraction(gd_window[-length:])

    def statistic(runs: RunsBySetting) -> Estimate:
        return mean_with_t_interval([pair(s, g) for s, g in zip(runs[sgd], runs[gd], strict=True)])

    return statistic


def batch_minus_lr_effect(batch_pair: tuple[str, str], lr_pair: tuple[str, str]) -> StatisticFunction:
    """|cos(batch a) − cos(batch b)| − |cos(lr a) − cos(lr b)| per seed, every mean cosine
    over the last window of ``batch_pair[0]`` (a window every constant-rate setting measures)."""

    def statistic(runs: RunsBySetting) -> Estimate:
        window = runs[batch_pair[0]][0].config.track_steps[-1]

        def cosines(setting: str) -> np.ndarray:
            return np.array(per_seed(runs[setting], lambda r: mean_field(in_window(r, window), "cosine")))

        batch_effect = np.abs(cosines(batch_pair[0]) - cosines(batch_pair[1]))
        lr_effect = np.abs(cosines(lr_pair[0]) - cosines(lr_pair[1]))
        return paired_difference(batch_effect.tolist(), lr_effect.tolist())

    return statistic


def final_minus_best(key: str, setting: str, others: tuple[str, ...]) -> StatisticFunction:
    """``setting``'s last recorded ``key`` minus the best (largest) of ``others``', per seed."""

    def statistic(runs: RunsBySetting) -> Estimate:
        own = per_seed(runs[setting], lambda r: last_history(r, key))
        best = np.max([per_seed(runs[name], lambda r: last_history(r, key)) for name in others], axis=0)
        return paired_difference(own, best.tolist())

    return statistic


# ------------------------------------------------------------------ edge of stability (X1, X3)
def _late_sharpness_ratio(result: WalkResult, *, preconditioned: bool = False) -> float:
    """Mean sharpness over its stability threshold in the second half of a full-batch run's
    estimates: GD's sharpness over 2/lr, or (``preconditioned``) Adam's preconditioned
    sharpness over the threshold recorded beside it, (2 + 2 β1) / ((1 − β1) lr)."""
    records = sorted(result.records, key=lambda r: r.step)
    if preconditioned:
        pairs = [
            (r.preconditioned_sharpness, r.stability_threshold)
            for r in records
            if r.preconditioned_sharpness is not None and r.stability_threshold is not None
        ]
    else:
        pairs = [(r.sharpness, 2.0 / result.config.lr) for r in records if r.sharpness is not None]
    late = pairs[len(pairs) // 2 :]
    if not late:
        raise ValueError(f"no sharpness estimates in the run (diverged: {result.divergence})")
    thresholds = {threshold for _, threshold in late}
    if len(thresholds) != 1:
        raise ValueError(f"the stability threshold changed within the late half ({sorted(thresholds)}): no one edge")
    (edge,) = thresholds
    return float(np.mean([value for value, _ in late])) / edge


def edge_sharpness_ratio(settings: Sequence[str], *, lowest: bool, preconditioned: bool = False) -> StatisticFunction:
    """Per seed, the late mean of sharpness over its stability threshold of each setting
    (``_late_sharpness_ratio``), the lowest of them (``lowest``) or the highest: every
    learning rate must reach the edge, none rise past it."""
    reduce = min if lowest else max

    def statistic(runs: RunsBySetting) -> Estimate:
        ratios = [
            per_seed(runs[setting], lambda r: _late_sharpness_ratio(r, preconditioned=preconditioned))
            for setting in settings
        ]
        return mean_with_t_interval([reduce(values) for values in zip(*ratios, strict=True)])

    return statistic


def edge_cosine(settings: Sequence[str]) -> StatisticFunction:
    """Per seed, the mean consecutive-gradient cosine over the second half of each setting's
    updates, the highest (least negative) of them."""

    def statistic(runs: RunsBySetting) -> Estimate:
        cosines = [per_seed(runs[setting], lambda r: mean_field(second_half(r), "cosine")) for setting in settings]
        return mean_with_t_interval([max(values) for values in zip(*cosines, strict=True)])

    return statistic
