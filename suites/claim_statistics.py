"""Per-seed statistics that the claim tiers share: window means, gaps between settings.

Each ``*_statistic`` builder returns a function of the runs of named settings (see
``sgdwalk.claims.engine.ClaimCheck``) giving an ``Estimate`` over seeds. The tiers
(``suites/real``, ``suites/gpu``) bind them to their setting names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sgdwalk.claims.engine import RunsBySetting, fraction, last_history, mean_field, tracked_windows
from sgdwalk.instrument.record import StepRecord
from sgdwalk.runs.runner import WalkResult
from sgdwalk.claims.statistics import Estimate, mean_with_t_interval, paired_difference

# "Most" segments: more than half.
MOST = 0.5


def in_window(result: WalkResult, window: tuple[int, int]) -> list[StepRecord]:
    start, stop = window
    records = [r for r in result.records if start <= r.step < stop]
    if not records:
        raise ValueError(f"no measured steps in {window} (diverged: {result.divergence})")
    return records


def late(result: WalkResult) -> list[StepRecord]:
    return tracked_windows(result.records)[-1]


def early(result: WalkResult) -> list[StepRecord]:
    return tracked_windows(result.records)[0]


def per_seed(runs: Sequence[WalkResult], statistic: Any) -> list[float]:
    return [float(statistic(run)) for run in runs]


def history_at_update(result: WalkResult, key: str, update: int) -> float:
    """A history value at the end of the epoch that ends at ``update`` updates."""
    for entry in result.history:
        if int(entry["step"]) == update and entry.get(key) is not None:
            return float(entry[key])
    raise ValueError(f"no {key} recorded at update {update}")


def second_half(records: Sequence[StepRecord]) -> list[StepRecord]:
    return list(records[len(records) // 2 :])


# ------------------------------------------------------------------------- checks


def c1_cosine(runs: RunsBySetting) -> Estimate:
    return mean_with_t_interval(per_seed(runs["gd-edge"], lambda r: mean_field(second_half(r.records), "cosine")))


def c1_floor(runs: RunsBySetting) -> Estimate:
    return mean_with_t_interval(
        per_seed(runs["gd-edge"], lambda r: fraction(second_half(r.records), lambda s: s.interior_floor))
    )


def interior_floor_fraction(setting: str) -> Any:
    def statistic(runs: RunsBySetting) -> Estimate:
        return mean_with_t_interval(per_seed(runs[setting], lambda r: fraction(r.records, lambda s: s.interior_floor)))

    return statistic


def c2_cosine_vs_gd(runs: RunsBySetting) -> Estimate:
    return paired_difference(
        per_seed(runs["sgd"], lambda r: mean_field(late(r), "cosine")),
        per_seed(runs["gd-edge"], lambda r: mean_field(second_half(r.records), "cosine")),
    )


def late_cosine_gap(small: str, large: str) -> Any:
    def statistic(runs: RunsBySetting) -> Estimate:
        return paired_difference(
            per_seed(runs[small], lambda r: mean_field(late(r), "cosine")),
            per_seed(runs[large], lambda r: mean_field(late(r), "cosine")),
        )

    return statistic


def height_gap(high_lr: str, low_lr: str, window: Any) -> Any:
    def statistic(runs: RunsBySetting) -> Estimate:
        return paired_difference(
            per_seed(runs[high_lr], lambda r: mean_field(window(r), "height_start")),
            per_seed(runs[low_lr], lambda r: mean_field(window(r), "height_start")),
        )

    return statistic


def early_barriers(setting: str) -> Any:
    def statistic(runs: RunsBySetting) -> Estimate:
        return mean_with_t_interval(per_seed(runs[setting], lambda r: sum(s.barrier for s in early(r))))

    return statistic


def late_barrier_fraction(setting: str) -> Any:
    def statistic(runs: RunsBySetting) -> Estimate:
        return mean_with_t_interval(per_seed(runs[setting], lambda r: fraction(late(r), lambda s: s.barrier)))

    return statistic


def relative_barrier_height(setting: str) -> Any:
    """Per seed, the largest barrier height over the loss at its segment's start (0 if none)."""

    def statistic(runs: RunsBySetting) -> Estimate:
        return mean_with_t_interval(
            per_seed(
                runs[setting],
                lambda r: max((s.barrier_height / s.loss_start for s in r.records if s.barrier), default=0.0),
            )
        )

    return statistic


def noisy_minus_gd(key: str) -> Any:
    def statistic(runs: RunsBySetting) -> Estimate:
        return paired_difference(
            per_seed(runs["noisy-gd"], lambda r: last_history(r, key)),
            per_seed(runs["gd"], lambda r: last_history(r, key)),
        )

    return statistic


def c9_sgd_beats_gd(runs: RunsBySetting) -> Estimate:
    return paired_difference(
        per_seed(runs["sgd"], lambda r: last_history(r, "val_accuracy")),
        per_seed(runs["gd"], lambda r: last_history(r, "val_accuracy")),
    )


def c10_sharpness_drop(runs: RunsBySetting) -> Estimate:
    def first_and_last(result: WalkResult) -> tuple[float, float]:
        values = [r.sharpness for r in result.records if r.sharpness is not None]
        if len(values) < 2:
            raise ValueError(f"need two sharpness estimates, got {values}")
        return float(values[0]), float(values[-1])

    pairs = [first_and_last(run) for run in runs["sgd"]]
    return paired_difference([early for early, _ in pairs], [late for _, late in pairs])
