"""The hook through which a project tells the sgdwalk pytest plugin the tier of its claim tests.

Registered by the plugin (``pytest_addhooks``). A project implements it in the conftest.py of
each suite folder; pytest calls a conftest's hooks only for the tests under that folder, so
the folder's conftest.py, not the plugin, knows the project's layout::

    # suites/real/conftest.py
    def pytest_sgdwalk_tier(item: pytest.Item) -> str:
        return "real"

Tests no conftest.py answers for are the ``unit`` tier.
"""

from __future__ import annotations

import pytest


@pytest.hookspec(firstresult=True)
def pytest_sgdwalk_tier(item: pytest.Item) -> str | None:
    """The tier (one of ``sgdwalk.claims.report.TIERS``) that the claims report gives the
    claim test ``item``, or None to leave it to a conftest.py further up (else ``unit``)."""
