"""The real tier's shared state: one run cache per session, so claims share their runs."""

from __future__ import annotations

import pytest

from sgdwalk.claims.engine import RunCache


@pytest.fixture(scope="session")
def run_cache() -> RunCache:
    return RunCache()
