"""Fixtures of the synthetic tier (hypothesis profiles live in the root conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_intra_op_thread() -> Iterator[None]:
    """Run each synthetic test with one torch intra-op thread, then restore the setting.

    Landscape tensors are tiny (d ≤ 64, n ≤ 256): a second thread buys nothing, and on a busy
    machine its spin-waits made a 256×64 float64 matmul 60× slower (24 ms vs 0.4 ms).
    Results do not depend on it: every reduction here is small enough to run unsplit.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def pytest_sgdwalk_tier(item: pytest.Item) -> str:
    """The claims report's tier of every claim test here: synthetic (the instrument on analytic landscapes with exact answers)."""
    return "synthetic"
