"""Runs shared between processes: the claim tiers under pytest-xdist keep their runs as sweep
cells in a folder the workers share (``SweepRunCache``, ``sgdwalk_shared_folder``), so that
each run is made once, a run another worker is making is waited for and read, and the
ledger is the one a single process writes.

Runs are the tiny MLP of ``tests/test_sweep.py`` on tiny synthetic Fashion-MNIST files.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from pathlib import Path

import pytest

from sgdwalk.claims.sweep_cache import SweepRunCache
from sgdwalk.runs.cost import run_cost
from sgdwalk.runs.owner import LOCK_FILE
from sgdwalk.runs.runner import run_walk
from sgdwalk.runs.sweep import cell_dir, cell_status, expand_grid, run_cell
from suites.profiles import PROFILES
from suites.tier_plan import case_configs, cases, heaviest_first, paper_data
from tests.test_pytest_plugin import PROJECT_INI, REPO_ROOT, entries_by_name, plugin_args, write_test
from tests.test_sweep import tiny_grid

pytest_plugins = ["pytester"]

# Short enough that a test waits a fraction of a second for a cell to be let go.
POLL_SECONDS = 0.05
# A tiny cell takes well under a second; a prepare still running after this is waiting.
PREPARE_SECONDS = 60.0


@pytest.fixture
def data_root(sweep_data_root: Path) -> Path:
    return sweep_data_root


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester folder with the project's ini, whose xdist workers can import sgdwalk."""
    pytester.makeini(PROJECT_INI)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    return pytester


def test_a_run_another_process_is_making_is_waited_for_and_read_not_made_again(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config,) = expand_grid(tiny_grid(data_root, seed=[1]))
    in_memory = run_walk(config)
    # What the other process will have written when it lets the cell go.
    finished_elsewhere = Path(run_cell(config.to_dict(), str(tmp_path / "elsewhere")))
    out = tmp_path / "shared"
    directory = cell_dir(out.resolve(), config)
    directory.mkdir(parents=True)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache made a run another process was making")

    monkeypatch.setattr("sgdwalk.runs.runner.run_walk", no_training)
    monkeypatch.setattr("sgdwalk.claims.sweep_cache.run_walk", no_training)
    with open(directory / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # what the other process's running cell holds

        def other_process_finishes() -> None:
            for path in finished_elsewhere.iterdir():
                if path.name != LOCK_FILE:
                    shutil.copy2(path, directory / path.name)
            fcntl.flock(handle, fcntl.LOCK_UN)

        release = threading.Timer(0.3, other_process_finishes)
        release.start()
        cache = SweepRunCache(out_root=out, poll_seconds=POLL_SECONDS)
        result = cache.run(config.replace(out_dir=None, progress=False))
        release.join()
    assert cache.reused == {config.result_hash}
    assert [r.as_dict() for r in result.records] == [r.as_dict() for r in in_memory.records]


def test_prepare_makes_the_free_runs_and_leaves_a_busy_one_to_be_waited_for(tmp_path: Path, data_root: Path) -> None:
    busy, free = expand_grid(tiny_grid(data_root, seed=[1, 2]))
    out = tmp_path / "shared"
    busy_directory = cell_dir(out.resolve(), busy)
    busy_directory.mkdir(parents=True)
    cache = SweepRunCache(out_root=out, poll_seconds=POLL_SECONDS)
    with open(busy_directory / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        # In a thread, so that a prepare that waited on the busy cell fails here instead of hanging.
        preparing = threading.Thread(target=cache.prepare, args=([busy, free],), daemon=True)
        preparing.start()
        preparing.join(timeout=PREPARE_SECONDS)
        assert not preparing.is_alive(), "prepare waited for a cell another process is running"
        assert list(cache.results) == [free.result_hash]
        assert cell_status(cell_dir(out, free)) == "finished"
        assert cell_status(busy_directory) == "missing"
    # The other process died before writing anything: the cell is made here when asked for.
    assert cache.run(busy).status == "finished"
    assert cell_status(busy_directory) == "finished"


def test_without_a_folder_prepare_makes_nothing_and_runs_stay_in_memory(tmp_path: Path, data_root: Path) -> None:
    (config,) = expand_grid(tiny_grid(data_root, seed=[1]))
    cache = SweepRunCache(out_root=None)
    cache.prepare([config])
    assert cache.results == {}
    assert cache.run(config).status == "finished" and list(cache.results) == [config.result_hash]


# Two claim tests on the same runs (seeds 1 and 2 of one setting), with the tiers' cache fixture:
# each run appends its seed to made.txt, in whichever process makes it.
SHARED_CONFTEST = """
from pathlib import Path

import pytest

import sgdwalk.claims.run_cache
import sgdwalk.runs.runner
from sgdwalk.claims.run_cache import RunCache
from sgdwalk.claims.sweep_cache import SweepRunCache
from sgdwalk.runs.cost import run_cost

MADE = Path(__file__).parent / "made.txt"


@pytest.fixture(autouse=True)
def count_runs(monkeypatch):
    made_here = sgdwalk.runs.runner.run_walk

    def counted(config, *args, **kwargs):
        with open(MADE, "a", encoding="utf-8") as made:
            made.write(f"{config.seed}\\n")
        return made_here(config, *args, **kwargs)

    # Where the in-memory cache calls it, and where a sweep cell imports it from.
    monkeypatch.setattr(sgdwalk.claims.run_cache, "run_walk", counted)
    monkeypatch.setattr(sgdwalk.runs.runner, "run_walk", counted)


@pytest.fixture(scope="session")
def run_cache(sgdwalk_shared_folder):
    return RunCache() if sgdwalk_shared_folder is None else SweepRunCache(out_root=sgdwalk_shared_folder)
"""

SHARED_TESTS = """
import numpy as np
import pytest

from sgdwalk.claims.check import ClaimCheck
from sgdwalk.claims.engine import run_check
from sgdwalk.claims.statistics import mean_with_t_interval
from sgdwalk.training.config import WalkConfig

BASE = WalkConfig.from_dict({base!r})


def final_loss(runs):
    return mean_with_t_interval([run.history[-1]["train_loss"] for run in runs["walk"]])


CHECK = ClaimCheck(
    claim_id="C9",
    name="loss",
    statistic_name="final train loss",
    settings=("walk",),
    statistic=final_loss,
    relation=">",
    bound=0.0,
    bound_reason="a loss is positive",
    reads="history",
)


@pytest.mark.claim("C9")
@pytest.mark.parametrize("name", ["first", "second"])
def test_check(name, run_cache, claim):
    run_check(CHECK, BASE, {{"walk": {{}}}}, (1, 2), run_cache, claim)
"""


@pytest.mark.slow  # two pytest-xdist workers importing torch: ~15 s, run by scripts/test.sh's slow step
def test_under_xdist_each_run_is_made_once_and_the_ledger_is_one_process_s(
    project: pytest.Pytester, data_root: Path
) -> None:
    pytest.importorskip("xdist")
    (config,) = expand_grid(tiny_grid(data_root, seed=[1]))
    base = {key: value for key, value in config.to_dict().items() if key != "seed"}
    write_test(project, "conftest.py", SHARED_CONFTEST)
    write_test(project, "test_shared.py", SHARED_TESTS.format(base=base))
    made = project.path / "made.txt"

    one = project.runpytest(*plugin_args(), "--sgdwalk-report", "one.json")
    one.assert_outcomes(passed=2)
    assert sorted(made.read_text().split()) == ["1", "2"]  # in memory: the second test reuses them
    made.unlink()
    spread = project.runpytest(*plugin_args(), "-n", "2", "--sgdwalk-report", "spread.json")
    spread.assert_outcomes(passed=2)
    assert sorted(made.read_text().split()) == ["1", "2"]  # shared: each run made by one worker only

    def statistics(report: Path) -> dict[str, object]:
        return {name: entry.statistics for name, entry in entries_by_name(report).items()}

    assert statistics(project.path / "spread.json") == statistics(project.path / "one.json")


def test_under_xdist_the_real_tier_takes_its_heaviest_checks_first() -> None:
    """So that no long check is taken last and runs alone (``heaviest_first``)."""
    real = PROFILES["real"]
    tier = cases(real, "cpu", {name: paper_data(part) for name, part in real.parts.items()})
    ordered = heaviest_first(tier)
    assert sorted(case.id for case in ordered) == sorted(case.id for case in tier)
    flops = [sum(run_cost(config).total for config in case_configs(case)) for case in ordered]
    assert flops == sorted(flops, reverse=True)
    # 66 seeds of a full-batch GD run and an SGD run: a third of the tier's arithmetic.
    assert ordered[0].id == "C9-mlp-sgd-best" and flops[0] > sum(flops) / 4
    # The conv net's three-seed checks: the cheapest runs of the tier.
    assert {case.id for case in ordered[-2:]} == {"C2-conv-sgd-floor", "C7-conv-early-barriers"}
