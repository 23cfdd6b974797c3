"""Claims C1-C11 and X1 on Fashion-MNIST on the CPU: the claims table at the ``real`` profile.

One test per check and part (``profiles.REAL_PARTS``: the MLP and a half-width conv net), on
the profile's seeds or those of ``--sgdwalk-seeds`` (``tox -e replicate`` runs a second set).
Slow (minutes): runs only with ``--runslow``. Needs Fashion-MNIST (Debian's
``dataset-fashion-mnist``, ``--sgdwalk-data-root`` or ``SGDWALK_DATA_ROOT``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Final

import pytest

from sgdwalk.claims.engine import run_check
from sgdwalk.claims.pytest_plugin import ClaimRecorder, is_xdist_worker
from sgdwalk.claims.run_cache import RunCache
from sgdwalk.training.data import DatasetNotFoundError, resolve_dataset
from suites.profiles import PROFILES
from suites.tier_plan import Case, case_marks, cases, heaviest_first, paper_data, session_profile

pytestmark = pytest.mark.slow

PROFILE: Final = PROFILES["real"]
# The tier's data is the parts' own (Fashion-MNIST), on the CPU.
DATA: Final = {name: paper_data(part) for name, part in PROFILE.parts.items()}


def tier_cases(config: pytest.Config) -> list[Case]:
    """The tier's cases, on the seeds of ``--sgdwalk-seeds`` when given; under pytest-xdist
    the heaviest first, so that the workers end together (``heaviest_first``)."""
    tier = cases(session_profile(PROFILE, config), "cpu", DATA)
    return heaviest_first(tier) if is_xdist_worker(config) else tier


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        params = [pytest.param(case, marks=case_marks(case), id=case.id) for case in tier_cases(metafunc.config)]
        metafunc.parametrize("case", params)


def test_claim(case: Case, run_cache: RunCache, claim: ClaimRecorder, sgdwalk_data_root: Path | None) -> None:
    base = case.base if sgdwalk_data_root is None else dataclasses.replace(case.base, data_root=str(sgdwalk_data_root))
    try:
        resolve_dataset(base.data, base.data_root)
    except DatasetNotFoundError as error:
        pytest.skip(str(error))
    claim.setting(profile=PROFILE.name, part=case.part.name)
    run_check(case.check, base, case.settings, case.seeds, run_cache, claim, verdict=case.verdict)
