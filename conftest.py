"""Repository-wide test settings: this project's suite policy and hypothesis profiles.

Suite policy (pytest's documented ``--runslow`` recipe, here where pytest's docs put it,
not in the sgdwalk plugin that every project installing sgdwalk loads):

- ``--runslow``: tests marked ``slow`` are skipped unless it is given;
- markers ``slow`` and ``gpu`` (the gpu tier decides its own skips at collection);
- the modules of ``ROUND_TRIP_MODULES``, every test in them marked slow, are not even
  imported without ``--runslow``: importing Lightning, transformers or MLflow costs seconds.

Hypothesis: `dev` (the default here) keeps property tests fast while editing; under CI
(the CI environment variable is set) hypothesis's built-in `ci` profile applies:
derandomized, no deadline, its default example count.
"""

from __future__ import annotations

import os
from pathlib import Path
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
# Round trips through third-party trainers and trackers, each module marked slow as a whole
# (tests/test_slow_modules.py checks it); without --runslow they are not collected at all.
ROUND_TRIP_MODULES: Final = frozenset(
    {"tests/test_lightning.py", "tests/test_sinks_mlflow.py", "tests/test_huggingface_callback.py"}
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="Run tests marked slow. (default: skip them)"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: slow test; skipped unless --runslow is given")
    config.addinivalue_line("markers", "gpu: test that needs a CUDA device (the gpu tier)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("runslow") or not collection_path.is_relative_to(config.rootpath):
        return None
    return True if collection_path.relative_to(config.rootpath).as_posix() in ROUND_TRIP_MODULES else None


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption("runslow"):
        return None
    return f"not collected without --runslow (slow round trips): {', '.join(sorted(ROUND_TRIP_MODULES))}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("runslow"):
        return
    skip_slow = pytest.mark.skip(reason=SLOW_SKIP_REASON)
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
