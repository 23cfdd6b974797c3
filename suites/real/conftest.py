"""The real tier's shared state: one run cache per session, so claims share their runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgdwalk.claims.run_cache import RunCache
from sgdwalk.claims.sweep_cache import SweepRunCache


@pytest.fixture(scope="session")
def run_cache(sgdwalk_shared_folder: Path | None) -> RunCache:
    """In memory; under pytest-xdist (``-n 2``), cells in the folder the workers share, so
    that each run is made once, by whichever worker gets to it first."""
    return RunCache() if sgdwalk_shared_folder is None else SweepRunCache(out_root=sgdwalk_shared_folder)


def pytest_sgdwalk_tier(item: pytest.Item) -> str:
    """The claims report's tier of every claim test here: real (Fashion-MNIST on the CPU)."""
    return "real"
