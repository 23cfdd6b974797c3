"""Repository-wide test settings: this project's suite policy and hypothesis profiles.

Suite policy (pytest's documented ``--runslow`` recipe, here where pytest's docs put it,
not in the sgdwalk plugin that every project installing sgdwalk loads):

- ``--runslow``: tests marked ``slow`` are skipped unless it is given;
- markers ``slow`` and ``gpu`` (the gpu tier decides its own skips at collection).

Hypothesis: `dev` (the default here) keeps property tests fast while editing; under CI
(the CI environment variable is set) hypothesis's built-in `ci` profile applies:
derandomized, no deadline, its default example count.
"""

from __future__ import annotations

import os
from typing import Final

import pytest

# Imported once for the whole session, before any pytester run: in-process pytester runs
# restore sys.modules afterwards, so a torch first imported inside one would be imported a
# second time by the next, and torch's C extension crashes (segfault) on a second import.
import torch  # noqa: F401
from hypothesis import HealthCheck, settings

# Derandomized so a local failure reproduces; few examples because each one trains a walk.
settings.register_profile(
    "dev",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
if os.environ.get("CI"):
    settings.load_profile("ci")
else:
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The reason a slow test is skipped with, as reports and tests quote it.
SLOW_SKIP_REASON: Final = "slow: needs --runslow"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="Run tests marked slow. (default: skip them)"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: slow test; skipped unless --runslow is given")
    config.addinivalue_line("markers", "gpu: test that needs a CUDA device (the gpu tier)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("runslow"):
        return
    skip_slow = pytest.mark.skip(reason=SLOW_SKIP_REASON)
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
