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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sgdwalk.claims.check import ClaimCheck, ClaimRecorderLike
from sgdwalk.claims.report import Relation, relation_holds
from sgdwalk.claims.run_cache import RunCache
from sgdwalk.claims.statistics import (
    CONFIDENCE,
    PLANNING_POWER,
    REPLICATION_PROBABILITY,
    Estimate,
    Replication,
    seeds_for_power,
    seeds_for_replication,
)
from sgdwalk.claims.tuned import SettingOverrides, check_run_configs, run_setting
from sgdwalk.claims.window_statistics import field_by_step
from sgdwalk.instrument.divergence import losses_divergence
from sgdwalk.runs.walk_result import WalkResult
from sgdwalk.training.config import WalkConfig


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
    cache.prepare(check_run_configs(check.settings, setting_table, base, seeds))
    runs: dict[str, list[WalkResult]] = {}
    recorded: dict[str, dict[str, Any]] = {}
    for setting in check.settings:
        runs[setting], recorded[setting] = run_setting(setting, setting_table[setting], base, seeds, cache, recorder)
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
    for name in check.beside:
        recorder.note(beside_note(name, runs))
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


def beside_note(name: str, runs: Mapping[str, Sequence[WalkResult]]) -> str:
    """The ledger's line on a record field read beside a check: per setting (with its batch
    and rate) and step where it was recorded, the mean over seeds, the seeds' sd and the mean
    of its own standard errors (``{name}_se``) where it has them."""
    parts = []
    for setting, results in runs.items():
        by_step = field_by_step(results, name)
        if not by_step:
            continue
        config = results[0].config
        values = []
        for step, (field, errors) in sorted(by_step.items()):
            spread = f", sd {np.std(field, ddof=1):.4g}" if len(field) > 1 else ""
            error = f", SE {np.mean(errors):.4g}" if errors else ""
            values.append(f"step {step} {np.mean(field):.4g} ({len(field)} seeds{spread}{error})")
        parts.append(f"{setting} (batch {config.batch_size}, lr {config.lr:g}): " + "; ".join(values))
    return f"{name} beside the statistic, mean over seeds: " + (" | ".join(parts) if parts else "not recorded")


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
