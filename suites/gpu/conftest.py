"""The GPU tier's options, its session run cache and its numerics.

Options (group "sgdwalk"; they exist when pytest is started on ``suites/gpu``):

- ``--sgdwalk-gpu-data {auto,paper,fashion-mnist}``: which data the parts run on;
- ``--sgdwalk-sweep-dir DIR``: read finished runs from a sweep folder (``sgdwalk sweep``)
  and write this session's runs there as cells.

Which tests run or skip, and why, is decided at collection in ``test_claims.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:
    import torch

    from sgdwalk.claims.sweep_cache import SweepRunCache

# Duplicated from suites.gpu.claims.DATA_CHOICES: importing that module here would import
# torch whenever pytest reads this conftest (even for --help); a test checks they agree.
DATA_CHOICES: Final[tuple[str, ...]] = ("auto", "paper", "fashion-mnist")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sgdwalk")
    group.addoption(
        "--sgdwalk-gpu-data",
        choices=DATA_CHOICES,
        default="auto",
        help="Data of the gpu tier: paper = CIFAR-10 (VGG-11, ResNet-56) and MNIST (MLP); "
        "fashion-mnist = the same networks on Fashion-MNIST (1 channel, padded to 32); auto = "
        "the paper's data when found, and for the tiny profile Fashion-MNIST when it is not. "
        "(default: auto)",
    )
    group.addoption(
        "--sgdwalk-sweep-dir",
        metavar="DIR",
        default=None,
        help="Sweep folder (sgdwalk sweep --out DIR): the gpu tier reads finished runs from "
        "DIR/cells and writes the runs it makes there. (default: none; runs stay in memory)",
    )


@pytest.fixture(scope="session")
def gpu_run_cache(pytestconfig: pytest.Config) -> SweepRunCache:
    """One cache per session, so claims that share a setting share its runs."""
    from sgdwalk.claims.sweep_cache import SweepRunCache  # deferred: it imports torch (see DATA_CHOICES)

    sweep_dir = pytestconfig.getoption("sgdwalk_sweep_dir", default=None)
    return SweepRunCache(out_root=None if sweep_dir is None else Path(sweep_dir))


@pytest.fixture(scope="session")
def gpu_numerics(sgdwalk_device: torch.device) -> Iterator[None]:
    """Float32 without TF32 on CUDA for the session, the package's one policy
    (``sgdwalk.instrument.numerics``), which every run applies for itself too: what the tests
    compute outside a run is measured in the same precision.

    TF32 rounds matmul and convolution inputs to 10 mantissa bits (cuDNN convolutions use it
    by default); the tier keeps float32 until benchmarks/gpu_speed.py shows that reduced
    precision leaves barrier decisions alone. CPU threads are the runs' own (``cpu_threads``).
    """
    from sgdwalk.instrument.numerics import float32_numerics  # deferred: it imports torch (see DATA_CHOICES)

    with float32_numerics(sgdwalk_device):
        yield
