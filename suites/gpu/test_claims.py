"""Claims C1-C11 on VGG-11, ResNet-56 and the MLP: one test per check of the claims table and part.

Slow: runs only with ``--runslow``. Which profile (``--sgdwalk-profile``; default smoke) on
which seeds (``--sgdwalk-seeds``; default the profile's), which device (``--sgdwalk-device``)
and which data (``--sgdwalk-gpu-data``) are decided at collection, and so is what cannot run
on this machine, and why:

- no CUDA device for a profile sized for one (smoke, paper), or no CUDA device and no
  ``--sgdwalk-device cpu`` (CI runs ``--sgdwalk-device cpu --sgdwalk-profile tiny``); an
  old driver reads the same (``torch.cuda.is_available()`` is False);
- a part whose data set is missing (the message says how to provide it, or to use
  ``--sgdwalk-gpu-data fashion-mnist``).

A ``--runslow`` session that selects such a test stops at collection with a one-line usage
error (``conftest.py``): a tier that skipped everything would exit 0 and read as a pass.
``--sgdwalk-gpu-allow-skip`` skips them instead, with the same reason.

The report records the profile and the data each claim ran on (``claim.setting``). The
tiny profile asserts no verdict: each of its tests asserts that the check runs and that its
statistic is finite (``profiles.py``); smoke and paper hold every statistic to its bound.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from sgdwalk.claims.engine import run_check
from sgdwalk.claims.pytest_plugin import is_xdist_worker
from sgdwalk.runs.runlog import device_name
from sgdwalk.runs.sweep import expand_grid, parse_grid
from sgdwalk.training.data import DatasetNotFoundError
from suites.gpu import conftest
from suites.gpu.claims import DATA_CHOICES, FALLBACK_DATA, PARTS, choose_data, main, not_found_line
from suites.profiles import DEFAULT_PROFILE, GPU_PROFILES, PROFILES, Profile
from suites.tier_plan import (
    Case,
    DataChoice,
    case_marks,
    cases,
    heaviest_first,
    paper_data,
    session_profile,
    tier_configs,
    tier_grid,
)

if TYPE_CHECKING:
    import torch

    from sgdwalk.claims.pytest_plugin import ClaimRecorder
    from sgdwalk.claims.sweep_cache import SweepRunCache

CPU_ONLY_WAY: Final = "on a CPU run a CPU profile: --sgdwalk-device cpu --sgdwalk-profile " + " or ".join(
    name for name in GPU_PROFILES if not PROFILES[name].needs_cuda
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What this session runs: the profile, the device, each test's case and marks, and why
    some cannot run here (case id -> reason, one line)."""

    profile: Profile
    device: str
    params: list[Any]
    unrunnable: dict[str, str]


_plan_key: Final = pytest.StashKey[Plan]()


def _profile(config: pytest.Config) -> Profile:
    name = config.getoption("sgdwalk_profile") or DEFAULT_PROFILE
    if name not in GPU_PROFILES:
        raise pytest.UsageError(f"--sgdwalk-profile {name!r}: the gpu tier knows {', '.join(GPU_PROFILES)}")
    return PROFILES[name]


def cuda_probe() -> tuple[bool, str]:
    """Whether torch sees a CUDA device, and if not, why as far as torch says (its warning,
    e.g. a driver too old for its CUDA, which would otherwise be an error at collection)."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    said = " ".join(" ".join(str(warning.message).split()) for warning in caught)
    built = f"this torch is built for CUDA {torch.version.cuda}" if torch.version.cuda else "this torch has no CUDA"
    return (
        available,
        f"no CUDA device (torch.cuda.is_available() is False; {said or 'no GPU, or a driver too old'}; {built})",
    )


def device_and_reason(requested: str, profile: Profile, cuda: tuple[bool, str]) -> tuple[str, str | None]:
    """The session's device, and why the tier cannot run on it (None: it can); ``cuda`` is
    ``cuda_probe()``."""
    cuda_available, no_cuda = cuda
    if requested == "cpu":
        if profile.needs_cuda:
            return "cpu", f"the {profile.name} profile is sized for a GPU; {CPU_ONLY_WAY}"
        return "cpu", None
    if cuda_available:
        return "cuda", None
    if requested == "cuda":
        return "cuda", f"--sgdwalk-device cuda, but {no_cuda}"
    return "cpu", f"{no_cuda} for the {profile.name} profile; {CPU_ONLY_WAY}"


def missing_data_reason(part: str, error: DatasetNotFoundError) -> str:
    """One line: which data set a part lacks, and the ways to provide it or do without."""
    missing = not_found_line(error)
    ways = "give its folder with --sgdwalk-data-root DIR (or $SGDWALK_DATA_ROOT)"
    if FALLBACK_DATA not in missing:
        ways += f", or run on {FALLBACK_DATA}: --sgdwalk-gpu-data {FALLBACK_DATA}"
    return f"{part}: {missing}; {ways}"


def plan(config: pytest.Config) -> Plan:
    """The session's plan, computed once (collection reads it for every test function)."""
    if _plan_key in config.stash:
        return config.stash[_plan_key]
    profile = session_profile(_profile(config), config)
    device, device_reason = device_and_reason(str(config.getoption("sgdwalk_device")), profile, cuda_probe())
    data_root = config.getoption("sgdwalk_data_root")
    mode = str(config.getoption("sgdwalk_gpu_data", default="auto"))
    data: dict[str, DataChoice] = {}
    data_reasons: dict[str, str] = {}
    for name, part in profile.parts.items():
        if device_reason is not None:
            # Nothing runs; the cases only name the tests (and their report entries).
            data[name] = paper_data(part, "not resolved: the tier cannot run here")
            continue
        try:
            data[name] = choose_data(part, mode, profile, data_root)
        except DatasetNotFoundError as error:
            data[name] = paper_data(part, "missing")
            data_reasons[name] = missing_data_reason(name, error)
    params = []
    unrunnable: dict[str, str] = {}
    tier = cases(profile, device, data, data_root)
    # Under pytest-xdist the heaviest first, so that the workers end together; the cost model
    # needs the networks, which an unrunnable tier never builds.
    for case in heaviest_first(tier) if is_xdist_worker(config) and device_reason is None else tier:
        marks = case_marks(case)
        reason = device_reason or data_reasons.get(case.part.name)
        if reason is not None:
            # Skipped only with --sgdwalk-gpu-allow-skip: otherwise conftest stops the session first.
            marks.append(pytest.mark.skip(reason=f"gpu tier: {reason}"))
            unrunnable[case.id] = reason
        params.append(pytest.param(case, marks=marks, id=case.id))
    config.stash[_plan_key] = Plan(profile, device, params, unrunnable)
    config.stash[conftest.UNRUNNABLE] = unrunnable
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
