"""Runs that measure only what their checks read (``sgdwalk.claims.measured_less``): which steps
a lighter run measures, which runs of a tier are lighter, and, on real training, that every
check declared to read less gets the same statistic from the lighter runs, bit for bit."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
import torch

from sgdwalk.claims.check import ClaimCheck
from sgdwalk.claims.measured_less import MeasuredLess, measured_for, most_read
from sgdwalk.claims.run_cache import RunCache, setting_configs
from sgdwalk.claims.tuned import TunedSetting, setting_run_configs
from sgdwalk.runs.run_data import WalkData
from sgdwalk.runs.runner import run_walk
from sgdwalk.training.config import WalkConfig
from suites import profiles
from suites.claims_table import CHECKS
from suites.tier_plan import DataChoice, base_config, cases, paper_data, part_settings, tier_configs

REAL = profiles.PROFILES["real"]
REAL_DATA = {name: paper_data(part) for name, part in REAL.parts.items()}


def real_setting(name: str) -> Mapping[str, Any]:
    setting = part_settings(REAL.parts["mlp"], REAL.sizes["mlp"])[name]
    assert not isinstance(setting, TunedSetting)
    return setting


def real_sgd() -> WalkConfig:
    part, size = REAL.parts["mlp"], REAL.sizes["mlp"]
    (config,) = setting_configs(base_config(part, size, REAL_DATA["mlp"], "cpu"), real_setting("sgd"), [1])
    return config


# ------------------------------------------------------------------------- measured_for
def test_a_run_that_serves_the_sharpness_measures_only_its_steps() -> None:
    sgd = real_sgd()
    assert sgd.track_steps == ((0, 20), (160, 200)) and sgd.sharpness_every == 160
    lighter = measured_for(sgd, "sharpness")
    assert lighter.track_steps == ((0, 1), (160, 161))
    assert lighter.sharpness_every == 160
    # Nor the noise scale the setting records beside C3-C5; everything else, the
    # trajectory's definition above all, is the run's own.
    assert (lighter.gradient_noise_scale_every, lighter.gradient_noise_batch) == (None, None)
    restored = dataclasses.replace(
        lighter, track_steps=sgd.track_steps, gradient_noise_scale_every=160, gradient_noise_batch=50
    )
    assert restored == sgd


def test_a_run_that_serves_the_history_measures_nothing() -> None:
    sgd = dataclasses.replace(real_sgd(), track_every=7, hessian_trace_every=20, top_eigenvalues_every=20)
    lighter = measured_for(sgd, "history")
    assert (lighter.track_steps, lighter.track_epochs, lighter.track_every) == ((), (), None)
    assert (lighter.sharpness_every, lighter.hessian_trace_every, lighter.top_eigenvalues_every) == (None,) * 3
    assert (lighter.seed, lighter.lr, lighter.batch_size, lighter.epochs) == (
        sgd.seed,
        sgd.lr,
        sgd.batch_size,
        sgd.epochs,
    )


def test_a_run_that_serves_the_records_is_the_setting_itself() -> None:
    sgd = real_sgd()
    assert measured_for(sgd, "records") is sgd


def test_the_sharpness_steps_are_kept_whole_where_the_schedule_needs_the_data_size() -> None:
    # Tracked epochs' steps depend on the steps per epoch, which only the data knows.
    by_epochs = dataclasses.replace(real_sgd(), track_epochs=(1, 4))
    assert measured_for(by_epochs, "sharpness") == by_epochs
    with pytest.raises(ValueError, match="sharpness_every"):
        measured_for(dataclasses.replace(real_sgd(), sharpness_every=None), "sharpness")
    with pytest.raises(ValueError, match="reads must be one of"):
        measured_for(real_sgd(), "everything")  # type: ignore[arg-type]


def test_a_shared_run_records_the_most_any_of_its_checks_reads() -> None:
    assert most_read(["history", "sharpness"]) == "sharpness"
    assert most_read(["history", "records", "sharpness"]) == "records"
    assert most_read(["history"]) == "history"


def test_a_check_refuses_an_unknown_read() -> None:
    (check,) = profiles.select("C10-sharpness")
    with pytest.raises(ValueError, match="reads must be one of"):
        dataclasses.replace(check, reads="nothing")  # type: ignore[arg-type]


def test_measured_less_lightens_only_the_seeds_it_names_and_says_which() -> None:
    part, size = REAL.parts["mlp"], REAL.sizes["mlp"]
    base = base_config(part, size, REAL_DATA["mlp"], "cpu")
    setting = MeasuredLess(real_setting("sgd"), {3: "sharpness", 4: "history"})
    full, sharp, history = setting.configs(base, [2, 3, 4])
    assert full.track_steps == ((0, 20), (160, 200))
    assert sharp.track_steps == ((0, 1), (160, 161)) and history.track_steps == ()
    assert [c.seed for c in (full, sharp, history)] == [2, 3, 4]
    ledger = setting.ledger([2, 3, 4])
    assert ledger["measured_only"] == {"sharpness": [3], "history": [4]}
    assert "measured_only" not in setting.ledger([2])


# ------------------------------------------------------------------------- the tier's plan
def test_the_real_tier_measures_its_extra_seeds_only_where_their_checks_read() -> None:
    by_id = {case.id: case for case in cases(REAL, "cpu", REAL_DATA)}
    c10 = by_id["C10-mlp-sharpness"]
    sgd = setting_run_configs(c10.settings["sgd"], c10.base, c10.seeds)
    # The paper's seeds also serve C2, C7 and C8: every window; the others only C9's "SGD
    # best" (the history) and C10 (the sharpness): the sharpness's two steps.
    assert [c.track_steps for c in sgd[:3]] == [((0, 20), (160, 200))] * 3
    assert {c.track_steps for c in sgd[3:]} == {((0, 1), (160, 161))}
    best = by_id["C9-mlp-sgd-best"]
    gd = setting_run_configs(best.settings["gd"], best.base, best.seeds)
    assert [c.track_steps for c in gd[:3]] == [((0, 50),)] * 3
    assert {c.track_steps for c in gd[3:]} == {()}
    # The same run wherever two checks share it: C9's sgd runs on C10's seeds are C10's; on
    # the seeds only C9 runs they measure nothing (C9 reads the history).
    best_sgd = setting_run_configs(best.settings["sgd"], best.base, best.seeds)
    assert [c.result_hash for c in best_sgd[: len(sgd)]] == [c.result_hash for c in sgd]
    assert len(best_sgd) > len(sgd) and {c.track_steps for c in best_sgd[len(sgd) :]} == {()}
    # Checks that read every record keep their settings as declared.
    c4 = by_id["C4-mlp-batch-vs-lr"]
    assert not any(isinstance(c4.settings[s], MeasuredLess) for s in c4.check.settings)


def test_the_tier_makes_each_run_once_as_its_cases_run_it() -> None:
    configs = tier_configs(REAL, "cpu", REAL_DATA)
    assert len({c.result_hash for c in configs}) == len(configs)
    made = {
        config.result_hash
        for case in cases(REAL, "cpu", REAL_DATA)
        for setting in case.check.settings
        for config in setting_run_configs(case.settings[setting], case.base, case.seeds)
    }
    assert made == {c.result_hash for c in configs}


# ------------------------------------------------------------------------- on real training
IMAGE_SIDE = 28  # the MLP's input is a Fashion-MNIST image
NUM_CLASSES = 10


def separable_images(train: int, validation: int) -> WalkData:
    """Random 28×28 images with linear labels: learnable in the tiny profile's few updates."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(train + validation, 1, IMAGE_SIDE, IMAGE_SIDE, generator=generator)
    targets = (inputs.flatten(1) @ torch.randn(IMAGE_SIDE**2, NUM_CLASSES, generator=generator)).argmax(dim=1)
    return WalkData(
        inputs[:train],
        targets[:train],
        inputs[train:],
        targets[train:],
        in_channels=1,
        image_size=IMAGE_SIDE,
        num_classes=NUM_CLASSES,
    )


class InMemoryCache(RunCache):
    def __init__(self, data: WalkData) -> None:
        super().__init__()
        self.walk_data = data

    def compute(self, config: WalkConfig) -> object:  # type: ignore[override]
        return run_walk(config, data=self.walk_data, progress=False)


def lighter_checks() -> list[ClaimCheck]:
    return [check for check in CHECKS if check.reads != "records"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("check", lighter_checks(), ids=lambda check: check.key)
def test_a_check_that_reads_less_gets_the_same_statistic_from_the_lighter_runs(check: ClaimCheck) -> None:
    """Each check declared to read less, on the tiny profile's MLP runs measured in full and
    measured only for it: the same per-seed values, bit for bit, from fewer measured steps."""
    tiny = profiles.PROFILES["tiny"]
    part, size = tiny.parts["mlp"], tiny.sizes["mlp"]
    assert size.train_subset is not None and size.validation_subset is not None
    cache = InMemoryCache(separable_images(size.train_subset, size.validation_subset))
    base = base_config(part, size, DataChoice("fashion-mnist", None, True, ""), "cpu")
    settings = part_settings(part, size)
    seeds = (1, 2)
    full, lighter, measured = {}, {}, {"full": 0, "lighter": 0}
    for setting in check.settings:
        overrides = settings[setting]
        configs = setting_run_configs(overrides, base, seeds)
        if isinstance(overrides, TunedSetting):
            configs = configs[: len(seeds)]  # the first grid point stands for the setting
        full[setting] = [cache.run(config) for config in configs]
        lighter[setting] = [cache.run(measured_for(config, check.reads)) for config in configs]
        measured["full"] += sum(len(run.records) for run in full[setting])
        measured["lighter"] += sum(len(run.records) for run in lighter[setting])
    assert check.statistic(lighter).per_seed == check.statistic(full).per_seed
    if measured["full"]:
        assert measured["lighter"] < measured["full"], measured
