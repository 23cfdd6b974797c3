"""The real tier's shared state: one run cache per session, so claims share their runs."""

from __future__ import annotations

import pytest

from sgdwalk.claims.run_cache import RunCache


@pytest.fixture(scope="session")
def run_cache() -> RunCache:
    return RunCache()


def pytest_sgdwalk_tier(item: pytest.Item) -> str:
    """The claims report's tier of every claim test here: real (Fashion-MNIST on the CPU)."""
    return "real"
