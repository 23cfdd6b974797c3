"""Claims C1-C11 on VGG-11, ResNet-56 and the MLP: one test per check of the claims table and part.

Slow: runs only with ``--runslow``. Which profile (``--sgdwalk-profile``; default smoke) on
which seeds (``--sgdwalk-seeds``; default the profile's), which device (``--sgdwalk-device``)
and which data (``--sgdwalk-gpu-data``) are decided at collection, and so is every skip, so
the whole tier skips with one reason:

- no CUDA device (and not ``--sgdwalk-device cpu --sgdwalk-profile tiny``, which CI runs);
- ``--sgdwalk-device cpu`` with a profile sized for a GPU (smoke, paper);
- a part whose data set is missing (the message says how to provide it, or to use
  ``--sgdwalk-gpu-data fashion-mnist``).

The report records the profile and the data each claim ran on (``claim.setting``). The
tiny profile asserts no verdict: each of its tests asserts that the check runs and that its
statistic is finite (``profiles.py``); smoke and paper hold every statistic to its bound.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from sgdwalk.claims.engine import run_check
from sgdwalk.runs.runlog import device_name
from sgdwalk.runs.sweep import expand_grid, parse_grid
from sgdwalk.training.data import DatasetNotFoundError
from suites.gpu import conftest
from suites.gpu.claims import DATA_CHOICES, PARTS, choose_data, main
from suites.profiles import DEFAULT_PROFILE, GPU_PROFILES, PROFILES, Profile
from suites.tier_plan import (
    Case,
    DataChoice,
    case_marks,
    cases,
    paper_data,
    session_profile,
    tier_configs,
    tier_grid,
)

if TYPE_CHECKING:
    import torch

    from sgdwalk.claims.pytest_plugin import ClaimRecorder
    from sgdwalk.claims.sweep_cache import SweepRunCache

NO_CUDA_REASON: Final = (
    "gpu tier: no CUDA device here (torch.cuda.is_available() is False); "
    "on a CPU only its tiny profile runs: --sgdwalk-device cpu --sgdwalk-profile tiny"
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What this session runs: the profile, the device, and each test's case and marks."""

    profile: Profile
    device: str
    params: list[Any]


_plan_key: Final = pytest.StashKey[Plan]()


def _profile(config: pytest.Config) -> Profile:
    name = config.getoption("sgdwalk_profile") or DEFAULT_PROFILE
    if name not in GPU_PROFILES:
        raise pytest.UsageError(f"--sgdwalk-profile {name!r}: the gpu tier knows {', '.join(GPU_PROFILES)}")
    return PROFILES[name]


def _device_and_skip(config: pytest.Config, profile: Profile) -> tuple[str, str | None]:
    import torch

    requested = str(config.getoption("sgdwalk_device"))
    if requested == "cpu":
        if profile.needs_cuda:
            return "cpu", (
                f"gpu tier: the {profile.name} profile is sized for a GPU; "
                "on a CPU only the tiny profile runs (--sgdwalk-profile tiny)"
            )
        return "cpu", None
    if requested == "cuda" or torch.cuda.is_available():
        # cuda asked for but absent: the sgdwalk_device fixture fails each test, as it should.
        return "cuda", None
    return "cpu", NO_CUDA_REASON


def plan(config: pytest.Config) -> Plan:
    """The session's plan, computed once (collection reads it for every test function)."""
    if _plan_key in config.stash:
        return config.stash[_plan_key]
    profile = session_profile(_profile(config), config)
    device, skip_reason = _device_and_skip(config, profile)
    data_root = config.getoption("sgdwalk_data_root")
    mode = str(config.getoption("sgdwalk_gpu_data", default="auto"))
    data: dict[str, DataChoice] = {}
    data_skips: dict[str, str] = {}
    for name, part in PARTS.items():
        if skip_reason is not None:
            # Nothing runs; the cases only name the tests (and their report entries).
            data[name] = paper_data(part, "not resolved: the tier is skipped")
            continue
        try:
            data[name] = choose_data(part, mode, profile.name, data_root)
        except DatasetNotFoundError as error:
            data[name] = paper_data(part, "missing")
            data_skips[name] = f"gpu tier, {name}: {error}"
    params = []
    for case in cases(profile, device, data, data_root):
        marks = case_marks(case)
        if skip_reason is not None:
            marks.append(pytest.mark.skip(reason=skip_reason))
        elif case.part.name in data_skips:
            marks.append(pytest.mark.skip(reason=data_skips[case.part.name]))
        params.append(pytest.param(case, marks=marks, id=case.id))
    config.stash[_plan_key] = Plan(profile, device, params)
    return config.stash[_plan_key]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", plan(metafunc.config).params)


@pytest.mark.slow
def test_claim(
    case: Case,
    gpu_run_cache: SweepRunCache,
    gpu_numerics: None,
    claim: ClaimRecorder,
    sgdwalk_device: torch.device,
    pytestconfig: pytest.Config,
) -> None:
    profile = plan(pytestconfig).profile
    claim.setting(
        profile=profile.name,
        part=case.part.name,
        paper_data=case.part.paper_data,
        data_fallback=case.data.fallback,
        # The card (torch.cuda.get_device_name) or the CPU, for the report.
        device_name=device_name(sgdwalk_device),
    )
    claim.note(f"data: {case.data.note}")
    run_check(case.check, case.base, case.settings, case.seeds, gpu_run_cache, claim, verdict=case.verdict)


# ------------------------------------------------------------------ plan consistency (fast)
def test_conftest_data_choices_match_claims() -> None:
    assert conftest.DATA_CHOICES == DATA_CHOICES


def test_a_grid_on_other_seeds_holds_the_runs_of_the_tier_on_those_seeds(tmp_path: Path) -> None:
    """``--seeds`` of ``python -m suites.gpu.claims`` is ``--sgdwalk-seeds`` of the tier."""
    grid = tmp_path / "grid.json"
    assert main(["--profile", "tiny", "--device", "cpu", "--grid", str(grid), "--seeds", "7,3"]) == 0
    seeded = PROFILES["tiny"].with_seeds((7, 3))
    configs = tier_configs(seeded, "cpu", {name: paper_data(part) for name, part in PARTS.items()})
    assert [c.result_hash for c in expand_grid(parse_grid(json.loads(grid.read_text())))] == [
        c.result_hash for c in configs
    ]
    assert {c.seed for c in configs} == {7, 3}


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_tier_grid_round_trips_to_the_same_runs(profile: str) -> None:
    """The grid `python -m suites.gpu.claims` writes expands to exactly the tier's runs, so a
    sweep's cells are found again by --sgdwalk-sweep-dir."""
    data = {name: paper_data(part) for name, part in PARTS.items()}
    configs = tier_configs(PROFILES[profile], "cuda", data)
    expanded = expand_grid(parse_grid(json.loads(json.dumps(tier_grid(configs)))))
    assert [c.result_hash for c in expanded] == [c.result_hash for c in configs]
