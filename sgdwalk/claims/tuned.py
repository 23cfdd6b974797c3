"""Settings tuned by grid search (``TunedSetting``) and how a check runs one setting over its seeds
(a plain one, a tuned one, or one whose runs on some seeds measure less: ``MeasuredLess``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgdwalk.claims.check import ClaimRecorderLike
from sgdwalk.claims.measured_less import MeasuredLess
from sgdwalk.claims.run_cache import RunCache, setting_configs
from sgdwalk.claims.window_statistics import last_history
from sgdwalk.runs.walk_result import WalkResult
from sgdwalk.training.config import WalkConfig


@dataclass(frozen=True)
class TunedSetting:
    """A setting tuned by grid search, as the paper tuned its schedules (Appendix C).

    Every point of the grid runs over the seeds; the setting's runs are those of the point
    with the highest mean over seeds of ``score``, a history value of each run's last
    recorded epoch (e.g. the final validation accuracy). Tuning on the value a check then
    compares makes each tuned setting a little optimistic; checks that compare tuned
    settings give each a grid of the same size, so the optimism is alike on both sides.
    """

    points: tuple[Mapping[str, Any], ...]
    score: str = "val_accuracy"

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a tuned setting needs at least one grid point")

    def mean_scores(self, runs_per_point: Sequence[Sequence[WalkResult]]) -> list[float]:
        """Each point's mean ``score`` over its runs; the best point is their argmax (the first on ties)."""
        return [float(np.mean([last_history(run, self.score) for run in runs])) for runs in runs_per_point]


# A setting as a tier's table declares it; a check may run it measuring less on some seeds.
DeclaredSetting = Mapping[str, Any] | TunedSetting
SettingOverrides = DeclaredSetting | MeasuredLess


def setting_points(overrides: SettingOverrides) -> tuple[Mapping[str, Any], ...]:
    """Every override set a setting runs: the grid of a tuned setting, else the one set."""
    if isinstance(overrides, TunedSetting):
        return overrides.points
    return (overrides.overrides,) if isinstance(overrides, MeasuredLess) else (overrides,)


def setting_run_configs(overrides: SettingOverrides, base: WalkConfig, seeds: Sequence[int]) -> list[WalkConfig]:
    """Every run a setting makes over the seeds: each grid point's of a tuned one, in point order."""
    if isinstance(overrides, MeasuredLess):
        return overrides.configs(base, seeds)
    return [config for point in setting_points(overrides) for config in setting_configs(base, point, seeds)]


def check_run_configs(
    settings: Sequence[str], setting_table: Mapping[str, SettingOverrides], base: WalkConfig, seeds: Sequence[int]
) -> list[WalkConfig]:
    """Every run a check of these settings asks for, setting by setting (``setting_run_configs``)."""
    return [config for name in settings for config in setting_run_configs(setting_table[name], base, seeds)]


def run_setting(
    name: str,
    overrides: SettingOverrides,
    base: WalkConfig,
    seeds: Sequence[int],
    cache: RunCache,
    recorder: ClaimRecorderLike,
) -> tuple[list[WalkResult], dict[str, Any]]:
    """The runs of one setting over the seeds (a tuned setting's best point) and what the
    ledger records of it."""
    if not isinstance(overrides, TunedSetting):
        ledger = overrides.ledger(seeds) if isinstance(overrides, MeasuredLess) else dict(overrides)
        return [cache.run(config) for config in setting_run_configs(overrides, base, seeds)], ledger
    per_point = [[cache.run(config) for config in setting_configs(base, point, seeds)] for point in overrides.points]
    means = overrides.mean_scores(per_point)
    best = int(np.argmax(means))
    varying = sorted(
        {key for point in overrides.points for key in point if point.get(key) != overrides.points[0].get(key)}
    )

    def label(point: Mapping[str, Any]) -> str:
        return ", ".join(f"{key} {point.get(key)}" for key in varying) or "the one point"

    recorder.note(
        f"setting {name} tuned on the mean final {overrides.score} over seeds: "
        + "; ".join(f"{label(point)} -> {mean:.4f}" for point, mean in zip(overrides.points, means, strict=True))
        + f"; chosen: {label(overrides.points[best])}"
    )
    return per_point[best], {**dict(overrides.points[best]), "tuned_over": [dict(p) for p in overrides.points]}
