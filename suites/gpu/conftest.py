"""The GPU tier's options, its session run cache and its numerics.

Options (group "sgdwalk"; they exist when pytest is started on ``suites/gpu``):

- ``--sgdwalk-gpu-data {auto,paper,fashion-mnist}``: which data the parts run on;
- ``--sgdwalk-sweep-dir DIR``: read finished runs from a sweep folder (``sgdwalk sweep``)
  and write this session's runs there as cells;
- ``--sgdwalk-gpu-allow-skip``: skip the tests this machine cannot run (no CUDA device for
  the profile, a missing data set). Without it a ``--runslow`` session that selects such a
  test stops at collection with a usage error: a tier that skipped everything and exited 0
  would read as a pass.

Which tests cannot run here, and why, is decided at collection in ``test_claims.py``.
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
ALLOW_SKIP_FLAG: Final = "--sgdwalk-gpu-allow-skip"
# Case id -> why that test cannot run on this machine (test_claims.plan fills it).
UNRUNNABLE: Final = pytest.StashKey[dict[str, str]]()


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
    group.addoption(
        ALLOW_SKIP_FLAG,
        action="store_true",
        default=False,
        help="Skip the gpu tier's tests that cannot run here (no CUDA device for the profile, a "
        "missing data set) instead of stopping the session with an error. (default: off; with "
        "--runslow such a test is a usage error)",
    )


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected: only the tests that would run count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stop a ``--runslow`` session that selected tests this machine cannot run, unless skips are allowed."""
    if not config.getoption("runslow", default=False) or config.getoption("sgdwalk_gpu_allow_skip"):
        return
    unrunnable = config.stash.get(UNRUNNABLE, {})
    reasons: dict[str, None] = {}  # each reason once, in test order
    for item in items:
        callspec = getattr(item, "callspec", None)
        case = None if callspec is None else callspec.params.get("case")
        if case is not None and case.id in unrunnable:
            reasons.setdefault(unrunnable[case.id])
    if reasons:
        raise pytest.UsageError(f"gpu tier cannot run here: {'; '.join(reasons)} ({ALLOW_SKIP_FLAG} skips these tests)")


@pytest.fixture(scope="session")
def gpu_run_cache(pytestconfig: pytest.Config, sgdwalk_shared_folder: Path | None) -> SweepRunCache:
    """One cache per session, so claims that share a setting share its runs: in the sweep
    folder when given, else under pytest-xdist in the folder the workers share (each run
    made once), else in memory."""
    from sgdwalk.claims.sweep_cache import SweepRunCache  # deferred: it imports torch (see DATA_CHOICES)

    sweep_dir = pytestconfig.getoption("sgdwalk_sweep_dir", default=None)
    return SweepRunCache(out_root=sgdwalk_shared_folder if sweep_dir is None else Path(sweep_dir))


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


def pytest_sgdwalk_tier(item: pytest.Item) -> str:
    """The claims report's tier of every claim test here: gpu (the paper's networks on a CUDA device)."""
    return "gpu"
