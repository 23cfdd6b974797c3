"""Claims as data, run on real training: settings, per-seed statistics, a bound, a verdict.

One table of ``ClaimCheck``s (``suites/claims_table.py``) serves every tier. Each check
names the settings it needs (``WalkConfig`` overrides of a tier's base config), a statistic
computed from the runs of those settings over the tier's seeds (an ``Estimate`` with a 95 %
interval over seeds), and a bound with the reason it was chosen. One parametrised test per
tier runs the table; runs are cached for the session so claims that share a setting share
its runs.

The verdict is decided on the conservative end of the interval: a claim "value > bound"
holds when the interval's low end exceeds the bound, "value < bound" when its high end is
below it. The reported value is that end; the mean and interval are reported beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sgdwalk.claims.report import RELATIONS, Relation, relation_holds
from sgdwalk.claims.statistics import (
    CONFIDENCE,
    PLANNING_POWER,
    REPLICATION_PROBABILITY,
    Estimate,
    Replication,
    seeds_for_power,
    seeds_for_replication,
)
from sgdwalk.instrument.divergence import losses_divergence
from sgdwalk.instrument.record import StepRecord
from sgdwalk.runs.run_data import WalkData, load_walk_data
from sgdwalk.runs.runner import run_walk
from sgdwalk.runs.walk_result import WalkResult
from sgdwalk.training.config import WalkConfig

RunsBySetting = Mapping[str, Sequence[WalkResult]]
StatisticFunction = Callable[[RunsBySetting], Estimate]


@dataclass(frozen=True, kw_only=True)
class ClaimCheck:
    """One pass/fail check of one claim, the same in every tier that runs it.

    Attributes:
        claim_id: the claim (C1-C11) this check tests.
        name: short name, unique within the claim (e.g. "batch-cosine"); ``key`` adds the claim.
        statistic_name: what is measured, in words, with its direction.
        settings: names of the settings (keys of a tier's setting table) the statistic needs.
        statistic: per-seed statistic with its interval, from the runs of those settings.
        relation / bound: the statistic must satisfy ``statistic relation bound``.
        bound_reason: why this bound, stated before the first run.
    """

    claim_id: str
    name: str
    statistic_name: str
    settings: tuple[str, ...]
    statistic: StatisticFunction
    relation: Relation
    bound: float
    bound_reason: str

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"{self.key}: relation must be one of {RELATIONS}, got {self.relation!r}")

    @property
    def key(self) -> str:
        """The check's name in the claims table, e.g. "C3-batch-cosine"."""
        return f"{self.claim_id}-{self.name}"


class ClaimRecorderLike(Protocol):
    def setting(self, **values: object) -> None: ...

    def note(self, text: str) -> None: ...

    def check(
        self,
        name: str,
        value: float,
        bound: float,
        relation: Relation,
        *,
        interval: tuple[float, float] | None = None,
        detail: str = "",
    ) -> None: ...


def config_key(config: WalkConfig) -> str:
    """A stable hash of everything that defines a run."""
    payload = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def data_key(config: WalkConfig) -> tuple[Any, ...]:
    """What decides the tensors a run trains on (runs that share it share the data)."""
    return (config.data, config.data_root, config.train_subset, config.validation_subset, config.pad_to)


@dataclass
class RunCache:
    """Runs computed once per session, shared by every claim that needs them.

    The data of a setting is loaded once too: reading and normalising a data set costs
    seconds, as much as a short run.
    """

    results: dict[str, WalkResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    data: dict[tuple[Any, ...], WalkData] = field(default_factory=dict)

    def run(self, config: WalkConfig) -> WalkResult:
        key = config_key(config)
        if key not in self.results:
            started = time.perf_counter()
            self.results[key] = self.compute(config)
            self.seconds[key] = time.perf_counter() - started
        return self.results[key]

    def compute(self, config: WalkConfig) -> WalkResult:
        """Produce a run not in the cache yet (subclasses may read it from disk instead)."""
        if data_key(config) not in self.data:
            self.data[data_key(config)] = load_walk_data(config)
        return run_walk(config, data=self.data[data_key(config)], progress=False)


def setting_configs(base: WalkConfig, overrides: Mapping[str, Any], seeds: Sequence[int]) -> list[WalkConfig]:
    """The setting's config for each seed; runs keep no files (out_dir=None)."""
    return [
        dataclasses.replace(base, **{**overrides, "seed": seed, "out_dir": None, "progress": False}) for seed in seeds
    ]


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


SettingOverrides = Mapping[str, Any] | TunedSetting


def setting_points(overrides: SettingOverrides) -> tuple[Mapping[str, Any], ...]:
    """Every override set a setting runs: the grid of a tuned setting, else the one set."""
    return overrides.points if isinstance(overrides, TunedSetting) else (overrides,)


def _run_setting(
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
        return [cache.run(config) for config in setting_configs(base, overrides, seeds)], dict(overrides)
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


def run_divergence(result: WalkResult) -> str | None:
    """Why a run diverged, or None: the runner's verdict, else the same rule (``divergence``)
    over its epochs' training losses, so that a run recorded before the rule is judged alike."""
    if result.divergence is not None:
        return result.divergence
    return losses_divergence(
        ((f"epoch {entry.get('epoch')}", entry.get("train_loss")) for entry in result.history), "training loss"
    )


def decisive_value(estimate: Estimate, relation: Relation) -> float:
    """The interval end that decides the verdict (low end for > and >=, high end for < and <=)."""
    return estimate.low if relation in (">", ">=") else estimate.high


def run_check(
    check: ClaimCheck,
    base: WalkConfig,
    setting_table: Mapping[str, SettingOverrides],
    seeds: Sequence[int],
    cache: RunCache,
    recorder: ClaimRecorderLike,
    *,
    verdict: bool = True,
) -> Estimate:
    """Run (or reuse) the check's settings over the seeds, record the statistic and assert it.

    With ``verdict`` the statistic is held against the check's bound; without, only its
    finiteness is asserted (``record_finite``) and the bound is noted, not tested: for runs
    too small to say anything about the claim.
    """
    runs: dict[str, list[WalkResult]] = {}
    recorded: dict[str, dict[str, Any]] = {}
    for setting in check.settings:
        runs[setting], recorded[setting] = _run_setting(setting, setting_table[setting], base, seeds, cache, recorder)
    recorder.setting(
        arch=base.arch,
        data=base.data,
        seeds=list(seeds),
        train_subset=base.train_subset,
        measurement_size=base.measurement_size,
        bn_mode=base.bn_mode,
        num_alphas=base.num_alphas,
        settings=recorded,
    )
    for setting, results in runs.items():
        diverged = [reason for reason in map(run_divergence, results) if reason is not None]
        if diverged:
            recorder.note(f"setting {setting} diverged: {diverged}")
    estimate = check.statistic(runs)
    recorder.note(f"{check.statistic_name}: mean {estimate}; bound reason: {check.bound_reason}")
    shares = estimate.measurement_share_range
    if shares is not None:
        recorder.note(
            f"measurement set's share of the seed-to-seed variance: {shares[0]:.1%} (steps' errors independent) "
            f"to {shares[1]:.1%} (perfectly correlated); settings' errors added as independent"
        )
    if len(estimate.per_seed) >= 2:
        needed = seeds_for_power(estimate.per_seed, check.bound, check.relation)
        recorder.note(
            f"seeds for {PLANNING_POWER:.0%} power at the measured effect and spread: "
            + (
                f"{needed} (ran {len(estimate.per_seed)})"
                if needed
                else "none (the mean does not point the claimed way, or beyond reach)"
            )
        )
        replication = seeds_for_replication(estimate.per_seed, check.bound, check.relation)
        recorder.note(replication_note(replication, len(estimate.per_seed)))
    if verdict:
        assert_bound(check, estimate, recorder)
    else:
        record_finite(check, estimate, recorder)
    return estimate


def replication_note(replication: Replication, ran: int) -> str:
    """The ledger's line on how many fresh seeds repeat the verdict (``seeds_for_replication``)."""
    count = f"{replication.seeds} (ran {ran})" if replication.seeds is not None else f"not sized: {replication.reason}"
    return (
        f"seeds to replicate the verdict ({'pass' if replication.passes else 'fail'}) with "
        f"{REPLICATION_PROBABILITY:.0%} probability on fresh seeds, at cautious effect {replication.effect:.4g} "
        f"(the {CONFIDENCE:.0%} interval's end nearest the bound) and spread {replication.spread:.4g} "
        f"(the {CONFIDENCE:.0%} interval's upper end of the per-seed sd): {count}"
    )


def _detail(estimate: Estimate) -> str:
    return f"mean {estimate.value:.4g}, per seed {[round(v, 5) for v in estimate.per_seed]}"


def assert_bound(check: ClaimCheck, estimate: Estimate, recorder: ClaimRecorderLike) -> None:
    """The verdict: the interval's conservative end against the check's bound."""
    end = "low" if check.relation in (">", ">=") else "high"
    recorder.check(
        f"{check.statistic_name} (95% CI {end} end)",
        decisive_value(estimate, check.relation),
        check.bound,
        check.relation,
        interval=estimate.interval,
        detail=_detail(estimate),
    )


def record_finite(check: ClaimCheck, estimate: Estimate, recorder: ClaimRecorderLike) -> None:
    """No verdict: assert that the mean and both interval ends are finite; note the bound.

    The recorded value is the largest magnitude of mean and interval ends, held below
    infinity (NaN fails too); the statistic itself is the recorded interval and detail.
    """
    decisive = decisive_value(estimate, check.relation)
    holds = relation_holds(decisive, check.relation, check.bound)
    recorder.note(
        f"bound not asserted at this size: {decisive:.4g} {check.relation} {check.bound:.4g} "
        f"would {'' if holds else 'not '}hold"
    )
    recorder.check(
        f"{check.statistic_name} (largest |mean or 95% CI end|, must be finite)",
        # numpy's max propagates NaN (Python's max may drop it, by argument order).
        float(np.max(np.abs([estimate.value, estimate.low, estimate.high]))),
        math.inf,
        "<",
        interval=estimate.interval,
        detail=_detail(estimate),
    )


# ------------------------------------------------------------------ window statistics
def tracked_windows(records: Sequence[StepRecord]) -> list[list[StepRecord]]:
    """Records split into windows of consecutive measured steps, in step order."""
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
    raise ValueError(f"run {config_key(result.config)} recorded no {key}")
