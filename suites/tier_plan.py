"""From a profile to tests: each part's base run, its settings, and one case per check.

A profile (``profiles.py``) gives sizes; this module turns them into the ``WalkConfig``
overrides the checks of ``claims_table.py`` name (the table in its docstring), the same way
in every tier, so that a check compares the same things whatever the profile. A case is one
test: a check of one part, with its base config, settings, seeds and declared xfail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pytest

from sgdwalk.claims.check import ClaimCheck, Reads
from sgdwalk.claims.measured_less import MeasuredLess, most_read
from sgdwalk.claims.pytest_plugin import given_seeds
from sgdwalk.claims.tuned import DeclaredSetting, SettingOverrides, TunedSetting, check_run_configs
from sgdwalk.runs.cost import run_cost
from sgdwalk.training.config import WalkConfig
from suites.claims_table import NOT_REPRODUCED, At
from suites.profiles import PROTOCOL_LR, EdgeSize, Part, PartSize, Profile

# --- the protocol (docs/protocol.md), each value with its source
WEIGHT_DECAY: Final = 1e-4
# The authors' GD summed 9 chunk means: effective lr 9 × 0.1 (docs/protocol.md#the-authors-bugs), their Figure 1 regime.
GD_EDGE_LR: Final = 0.9
# Cyclical and trapezoid schedules run from 0.01 up to 0.3: 0.3 is the top rate the paper
# trains with (ResNet-56, Table 2), 0.01 a tenth of the protocol's 0.1. The paper tuned each
# schedule by grid search; one fixed range for all is this tier's stated simplification.
CLR_BASE_LR: Final = 0.01
CLR_MAX_LR: Final = 0.3
# Short cycles: half a cycle is a tenth of the run (5 cycles); long: a quarter (2 cycles).
# The trapezoid ramps like the short cycle's first half and anneals over the last quarter.
SHORT_HALF_CYCLE: Final = 0.1
LONG_HALF_CYCLE: Final = 0.25
# Step decay: ×0.1 at half and at three quarters of the run (the common CIFAR recipe).
STEP_GAMMA: Final = 0.1


@dataclass(frozen=True)
class DataChoice:
    """The data set a part runs on, and whether it replaces the paper's."""

    name: str
    pad_to: int | None
    fallback: bool
    note: str


def paper_data(part: Part, note: str = "") -> DataChoice:
    """The part's own data set, as is."""
    return DataChoice(part.paper_data, None, False, note or f"{part.paper_data} (the paper's data)")


# ------------------------------------------------------------------------- settings
def base_config(part: Part, size: PartSize, data: DataChoice, device: str, data_root: str | None = None) -> WalkConfig:
    """The protocol run of ``part`` at ``size``: SGD, no momentum, lr 0.1, weight decay 1e-4."""
    return WalkConfig(
        arch=part.arch,
        data=data.name,
        data_root=data_root,
        pad_to=data.pad_to,
        # CIFAR-10's crop and flip (docs/protocol.md#data-and-splits); the MNISTs are not augmented.
        augment=data.name == "cifar10",
        train_subset=size.train_subset,
        validation_subset=size.validation_subset,
        width_multiplier=size.width_multiplier,
        optimizer="sgd",
        lr=PROTOCOL_LR,
        batch_size=size.batch_size,
        weight_decay=WEIGHT_DECAY,
        noise_batches=size.noise_batches,
        epochs=size.epochs_for(size.updates, size.batch_size),
        track_epochs=(),
        track_steps=size.windows,
        steps_per_window=None,
        measurement_size=size.measurement_size,
        chunk_size=size.chunk_size,
        hvp_chunk_size=size.hvp_chunk_size,
        num_alphas=size.num_alphas,
        # The authors' choice (docs/definitions.md#batch-norm-modes): batch statistics of the evaluation chunks.
        bn_mode="train",
        checkpoint_every_epochs=None,
        evaluate_every_updates=size.evaluate_every_updates,
        device=device,  # type: ignore[arg-type]  # "cpu" or "cuda", resolved by the tier
        progress=False,
    )


def _schedule_settings(epochs: int, factor: float) -> dict[str, dict[str, Any]]:
    """The four schedules of Appendix C with every learning rate times ``factor``."""
    common: dict[str, Any] = {"epochs": epochs, "track_steps": ()}
    cyclical: dict[str, Any] = {
        **common,
        "lr_schedule": "cyclical",
        "lr": CLR_BASE_LR * factor,
        "lr_max": CLR_MAX_LR * factor,
    }
    return {
        "lr-step": {
            **common,
            "lr_schedule": "step",
            "lr": PROTOCOL_LR * factor,
            "lr_gamma": STEP_GAMMA,
            "lr_milestones": (max(1, epochs // 2), max(2, 3 * epochs // 4)),
        },
        "lr-cyclical-short": {**cyclical, "lr_step_epochs": SHORT_HALF_CYCLE * epochs},
        "lr-cyclical-long": {**cyclical, "lr_step_epochs": LONG_HALF_CYCLE * epochs},
        "lr-trapezoid": {
            **common,
            "lr_schedule": "trapezoid",
            "lr": CLR_BASE_LR * factor,
            "lr_max": CLR_MAX_LR * factor,
            "lr_step_epochs": SHORT_HALF_CYCLE * epochs,
            "lr_anneal_epochs": LONG_HALF_CYCLE * epochs,
            "lr_final": 0.0,
        },
    }


def schedule_settings(epochs: int, grid: tuple[float, ...]) -> dict[str, DeclaredSetting]:
    """Each schedule at the grid's one factor, or tuned over the grid (``TunedSetting``)."""
    if len(grid) == 1:
        return dict(_schedule_settings(epochs, grid[0]))
    points = [_schedule_settings(epochs, factor) for factor in grid]
    return {name: TunedSetting(tuple(point[name] for point in points)) for name in points[0]}


# X1 (Cohen et al. 2021): no weight decay, so the Hessian GD's stability depends on is the loss's.
EDGE_WEIGHT_DECAY: Final = 0.0


def edge_settings(edge: EdgeSize) -> dict[str, dict[str, Any]]:
    """``edge-a`` and ``edge-b``: full-batch GD of the MLP without batch norm, tanh, measured
    at every update on its whole training subset, the sharpness every ``sharpness_every``;
    ``edge-relu-a`` and ``-b``, the same with ``second_activation``; ``adam-edge``: full-batch
    Adam of the tanh network, measured only where its preconditioned sharpness is estimated."""

    def network(activation: str, images: int) -> dict[str, Any]:
        """The edge network, trained full-batch on ``images``, which are also its measurement set."""
        return {
            "batch_norm": False,
            "activation": activation,
            "train_subset": images,
            "width_multiplier": edge.width_multiplier,
            "measurement_size": None,
            "chunk_size": images,
            "gd_chunk_size": images,
            "weight_decay": EDGE_WEIGHT_DECAY,
        }

    settings = {}
    for prefix, activation in (("edge", "tanh"), (f"edge-{edge.second_activation}", edge.second_activation)):
        for name, lr in zip((f"{prefix}-a", f"{prefix}-b"), edge.lrs, strict=True):
            updates = edge.updates(lr)
            settings[name] = {
                **network(activation, edge.train_subset),
                "optimizer": "gd",
                "lr": lr,
                "epochs": updates,  # one update per epoch
                "track_steps": ((0, updates),),
                "sharpness_every": edge.sharpness_every,
            }
    adaptive = edge.adaptive
    settings["adam-edge"] = {
        **network("tanh", adaptive.train_subset),
        "optimizer": "full-batch-adam",
        "lr": adaptive.lr,
        "epochs": adaptive.updates,
        "track_steps": (),
        "track_every": adaptive.sharpness_every,
        "preconditioned_sharpness_every": adaptive.sharpness_every,
    }
    return settings


def part_settings(part: Part, size: PartSize) -> dict[str, DeclaredSetting]:
    """Overrides of ``base_config`` for every setting of ``part`` (``claims_table``'s docstring)."""
    # The gradient noise scale at the start of the first and the last window (the steps of
    # the sharpness) of every constant-rate SGD setting: what C3-C5 are about, noted beside them.
    noise: dict[str, Any] = (
        {}
        if size.noise_scale_batch is None
        else {"gradient_noise_scale_every": size.sharpness_every, "gradient_noise_batch": size.noise_scale_batch}
    )
    sgd: dict[str, Any] = {**({"sharpness_every": size.sharpness_every} if size.measure_sharpness else {}), **noise}

    def batch(batch_size: int) -> dict[str, Any]:
        return {
            "batch_size": batch_size,
            "epochs": size.epochs_for(size.batch_updates, batch_size),
            "track_steps": size.batch_windows,
            **noise,
        }

    def gd(lr: float, updates: int, measured: bool = True) -> dict[str, Any]:
        return {
            "optimizer": "gd",
            "lr": lr,
            "epochs": updates,  # one update per epoch
            "track_steps": size.gd_windows(updates) if measured else (),
        }

    settings: dict[str, DeclaredSetting] = {
        "sgd": sgd,
        # At lr 0.1 the high rate is the protocol run itself: the same config, one run.
        "lr-high": sgd if part.lr_high == PROTOCOL_LR else {"lr": part.lr_high, **noise},
        "lr-low": {"lr": part.lr_low, **noise},
        "batch-small": batch(size.small_batch),
        # The protocol batch is the protocol run itself (measured on the batch sweep's last window).
        "batch-reference": sgd if size.batch_reference is None else batch(size.batch_reference),
        "batch-large": batch(size.large_batch),
        "gd": gd(PROTOCOL_LR, size.gd_updates),
        "gd-edge": gd(GD_EDGE_LR, size.gd_edge_updates),
        # The authors' c = 0.02 (the WalkConfig default): σ² = c · max coordinate variance at θ_0.
        "noisy-gd": {**gd(PROTOCOL_LR, size.gd_updates, measured=False), "optimizer": "noisy-gd"},
    }
    if size.schedule_epochs is not None:
        settings.update(schedule_settings(size.schedule_epochs, size.schedule_grid))
    if size.edge is not None:
        settings.update(edge_settings(size.edge))
    return settings


# ------------------------------------------------------------------------- the plan
def session_profile(profile: Profile, config: pytest.Config) -> Profile:
    """``profile`` on the seeds of ``--sgdwalk-seeds`` when given (``Profile.with_seeds``);
    a set too short for the profile is a usage error."""
    seeds = given_seeds(config)
    if seeds is None:
        return profile
    try:
        return profile.with_seeds(seeds)
    except ValueError as error:
        raise pytest.UsageError(f"--sgdwalk-seeds: {error}") from None


@dataclass(frozen=True)
class Case:
    """One test: a check of one part in one profile, with everything ``run_check`` needs."""

    id: str
    profile: str
    part: Part
    check: ClaimCheck
    base: WalkConfig
    settings: Mapping[str, SettingOverrides]
    seeds: tuple[int, ...]
    data: DataChoice
    # The declared non-reproduction (``claims_table.NOT_REPRODUCED``), None where it holds.
    not_reproduced: str | None
    # Whether that xfail is strict: the data and device are those it was measured on.
    strict: bool
    # Hold the statistic against its bound (else assert only that it is finite).
    verdict: bool


def seed_reads(profile: Profile, part: Part) -> dict[tuple[str, int], Reads]:
    """What each run of the part must record, by (setting, seed): the most that any check
    run on that seed reads of that setting (``ClaimCheck.reads``)."""
    reads: dict[tuple[str, int], list[Reads]] = {}
    for check in part.checks:
        for setting in check.settings:
            for seed in profile.seeds_for(part, check):
                reads.setdefault((setting, seed), []).append(check.reads)
    return {key: most_read(values) for key, values in reads.items()}


def check_settings(
    check: ClaimCheck,
    settings: Mapping[str, DeclaredSetting],
    reads: Mapping[tuple[str, int], Reads],
    seeds: Sequence[int],
) -> dict[str, SettingOverrides]:
    """The part's settings as ``check`` runs them on ``seeds``: each of its plain settings
    some of whose seeds' runs serve only checks that read less is a ``MeasuredLess``."""
    table: dict[str, SettingOverrides] = dict(settings)
    for setting in check.settings:
        overrides = settings[setting]
        lighter = {seed: reads[setting, seed] for seed in seeds if reads[setting, seed] != "records"}
        if lighter and not isinstance(overrides, TunedSetting):
            table[setting] = MeasuredLess(overrides, lighter)
    return table


def cases(profile: Profile, device: str, data: Mapping[str, DataChoice], data_root: str | None = None) -> list[Case]:
    """Every check of every part whose data is known (``data``: part name → choice)."""
    result = []
    for name, part in profile.parts.items():
        if name not in data:
            continue
        size = profile.sizes[name]
        base = base_config(part, size, data[name], device, data_root)
        settings = part_settings(part, size)
        reads = seed_reads(profile, part)
        for check in part.checks:
            seeds = profile.seeds_for(part, check)
            result.append(
                Case(
                    id=profile.test_id(part, check),
                    profile=profile.name,
                    part=part,
                    check=check,
                    base=base,
                    settings=check_settings(check, settings, reads, seeds),
                    seeds=seeds,
                    data=data[name],
                    not_reproduced=NOT_REPRODUCED.get(At(profile.name, name, check.key)),
                    strict=profile.measured_on in (None, (data[name].name, device)),
                    verdict=profile.verdicts,
                )
            )
    return result


def case_configs(case: Case) -> list[WalkConfig]:
    """Every run the case's check asks for: each of its settings (every grid point of a tuned
    one) × its seeds, each measuring what the tier's checks read of it."""
    return check_run_configs(case.check.settings, case.settings, case.base, case.seeds)


def tier_configs(profile: Profile, device: str, data: Mapping[str, DataChoice]) -> list[WalkConfig]:
    """Every run the tier makes (``case_configs`` of every case, each run once), in part and
    check order."""
    configs: dict[str, WalkConfig] = {}
    for case in cases(profile, device, data):
        for config in case_configs(case):
            configs.setdefault(config.result_hash, config)
    return list(configs.values())


def heaviest_first(tier_cases: Sequence[Case]) -> list[Case]:
    """The cases by the FLOPs of the runs their checks ask for (the cost model), most first;
    equal ones keep their order.

    pytest-xdist's workers take tests in the order given, each the next one as it finishes:
    a long check taken late runs alone while the other workers have nothing left. Longest
    first, the classic greedy schedule, lets the short checks fill in around the long ones
    (the real tier's C9 "SGD best", 66 seeds, is a third of its arithmetic). A run several
    checks share counts in each: the order is a schedule, not an account of who paid.
    """
    flops = {case.id: sum(run_cost(config).total for config in case_configs(case)) for case in tier_cases}
    return sorted(tier_cases, key=lambda case: -flops[case.id])


# Sweep cells checkpoint every epoch, so that a cell cut by a Slurm time limit resumes there
# (checkpointing does not change the records, nor the cell's hash).
SWEEP_CHECKPOINT_EVERY_EPOCHS: Final = 1


def tier_grid(configs: Sequence[WalkConfig]) -> dict[str, Any]:
    """A sweep grid (``sgdwalk sweep``) of exactly these runs: one ``cells`` table each."""
    excluded = {"out_dir", "data_root", "progress"}
    return {
        "cells": [
            {
                **{k: v for k, v in config.to_dict().items() if k not in excluded},
                "checkpoint_every_epochs": SWEEP_CHECKPOINT_EVERY_EPOCHS,
            }
            for config in configs
        ]
    }


def case_marks(case: Case) -> list[pytest.MarkDecorator]:
    """The claim marker, and the strict xfail of a declared non-reproduction."""
    marks = [pytest.mark.claim(case.check.claim_id)]
    if case.not_reproduced is not None:
        # The quoted values hold for the data and device they were measured on; elsewhere
        # the check is expected to fail but may not (a non-strict xfail).
        marks.append(pytest.mark.xfail(strict=case.strict, reason=f"{case.profile} profile: {case.not_reproduced}"))
    return marks
