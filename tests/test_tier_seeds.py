"""Any claim tier on any seeds: ``Profile.with_seeds`` and ``--sgdwalk-seeds`` at collection.

The tiers are collected, never run (no training): the cases they would run carry the given
seeds, and the report the session writes records them.
"""

from __future__ import annotations

import configparser
import dataclasses
from collections.abc import Iterable
from pathlib import Path

import pytest

from sgdwalk.claims.pytest_plugin import parse_seeds
from sgdwalk.claims.report import ClaimsReport, load_report
from suites import profiles
from suites.tier_plan import Case, cases, paper_data
from tests.test_pytest_plugin import plugin_args

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[1]
GIVEN = tuple(range(2001, 2067))


def plan_seeds(profile: profiles.Profile) -> dict[str, tuple[int, ...]]:
    data = {name: paper_data(part) for name, part in profile.parts.items()}
    return {case.id: case.seeds for case in cases(profile, "cpu", data)}


def test_a_check_takes_as_many_of_the_given_seeds_as_its_profile_runs() -> None:
    real = profiles.PROFILES["real"]
    own, given = plan_seeds(real), plan_seeds(real.with_seeds(GIVEN))
    assert own.keys() == given.keys()
    for test_id, seeds in own.items():
        assert given[test_id] == GIVEN[: len(seeds)], test_id
    # Every length occurs: three seeds, and the five, seven, ten, 28 and 66 of more_seeds.
    assert given["C2-mlp-sgd-floor"] == GIVEN[:3] and given["C9-mlp-sgd-best"] == GIVEN
    assert {len(seeds) for seeds in given.values()} == {3, 5, 7, 10, 28, 66}
    # A longer set is cut to what each check runs; a profile without more_seeds takes its count.
    assert plan_seeds(real.with_seeds(range(3001, 3081))) == {
        k: tuple(range(3001, 3001 + len(v))) for k, v in own.items()
    }
    assert set(plan_seeds(profiles.PROFILES["tiny"].with_seeds(GIVEN)).values()) == {GIVEN[:2]}


def test_too_few_or_repeated_seeds_are_refused_naming_the_count_needed() -> None:
    real = profiles.PROFILES["real"]
    with pytest.raises(ValueError, match="runs checks on up to 66 seeds; 65 given"):
        real.with_seeds(GIVEN[:65])
    with pytest.raises(ValueError, match="seeds must differ"):
        real.with_seeds((*GIVEN[:65], GIVEN[0]))
    # The new profile is a profile: its more_seeds start with its seeds (checked on creation).
    assert dataclasses.replace(real.with_seeds(GIVEN)).seeds == GIVEN[:3]


def collected_cases(pytester: pytest.Pytester, *args: str) -> tuple[list[Case], ClaimsReport]:
    """The cases a tier's session would run (collected in-process, not run) and its report."""
    report = pytester.path / "report.json"
    recorder = pytester.inline_run(
        *plugin_args(), "--collect-only", "--runslow", "-p", "no:cacheprovider", "--sgdwalk-report", str(report), *args
    )
    items = [item for call in recorder.getcalls("pytest_collection_finish") for item in call.session.items]
    # The tier's claim tests; the gpu module also holds fast plan checks, which take no case.
    claim_tests = [item for item in items if "case" in getattr(item, "fixturenames", ())]
    return [item.callspec.params["case"] for item in claim_tests], load_report(report)


def test_the_real_tier_collects_its_cases_on_the_given_seeds(pytester: pytest.Pytester) -> None:
    tier = str(REPO_ROOT / "suites" / "real" / "test_claims.py")
    own, _ = collected_cases(pytester, tier)
    given, report = collected_cases(pytester, tier, "--sgdwalk-seeds", "2001-2066")
    assert len(given) == len(own) == 32
    assert {case.id: case.seeds for case in given} == {case.id: GIVEN[: len(case.seeds)] for case in own}
    assert report.settings == {"seeds": list(GIVEN)}


def test_the_gpu_tier_collects_its_cases_on_the_given_seeds(pytester: pytest.Pytester) -> None:
    tier = str(REPO_ROOT / "suites" / "gpu" / "test_claims.py")
    given, report = collected_cases(
        pytester, tier, "--sgdwalk-device", "cpu", "--sgdwalk-profile", "tiny", "--sgdwalk-seeds", "7,3"
    )
    assert given and {case.seeds for case in given} == {(7, 3)}
    assert report.settings == {"seeds": [7, 3]}


def test_the_replication_seeds_share_no_run_and_no_stream_with_any_profile() -> None:
    """``tox -e replicate`` runs the real tier on tox.ini's ``[replicate] seeds``."""
    from sgdwalk.runs import streams as run_streams

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO_ROOT / "tox.ini", encoding="utf-8")
    replication = parse_seeds(tox["replicate"]["seeds"])
    assert "--sgdwalk-seeds {[replicate]seeds}" in tox["testenv:replicate"]["commands"]
    # Every generator a run seeds: its seed and the runner's streams above it.
    offsets = range(
        max(
            run_streams.MEASUREMENT_STREAM,
            run_streams.NOISE_STREAM,
            run_streams.NOISE_ESTIMATE_STREAM,
            run_streams.SAMPLE_ORDER_STREAM,
        )
        + 1
    )

    def streams(seeds: Iterable[int]) -> set[int]:
        return {seed + offset for seed in seeds for offset in offsets}

    for profile in profiles.PROFILES.values():
        own = {seed for seeds in (profile.seeds, *profile.more_seeds.values()) for seed in seeds}
        assert not streams(replication) & streams(own), profile.name
    real = profiles.PROFILES["real"]
    assert max(map(len, plan_seeds(real.with_seeds(replication)).values())) == len(replication)
