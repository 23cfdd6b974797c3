"""The examples run, and they agree: the plain loop, the one-line attach and the Lightning
callback train the same network from the same seed on the same batches, so their records
must be equal, bitwise (``==`` on every float of every record).

In-process here (torch is imported once); as scripts, the way the README runs them, in the
slow step.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from sgdwalk.instrument.record import StepRecord
from sgdwalk.integrations.csv_sink import read_csv_metrics
from sgdwalk.integrations.metrics import flat_metrics
from tests.integration_helpers import optional_library

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# A fresh interpreter importing torch (and Lightning) on a slow, shared CPU.
SUBPROCESS_TIMEOUT_SECONDS = 180
# The one warning Lightning 2.6 raises here (see tests/test_lightning.py): inside Lightning.
LIGHTNING_LEAFSPEC = r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"


def example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # the examples import their shared synthetic.py
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plain_records() -> list[StepRecord]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        records: list[StepRecord] = example("plain_loop", monkeypatch).main()
    return records


def test_the_plain_loop_tracks_its_two_windows(plain_records: list[StepRecord]) -> None:
    assert [r.step for r in plain_records] == [*range(20), *range(40, 60)]
    assert plain_records[-1].loss_end < plain_records[0].loss_start, "the network learns the teacher's labels"


def test_attach_gives_the_plain_loops_records_and_its_csv(
    plain_records: list[StepRecord], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    records = example("attach", monkeypatch).main(tmp_path)
    assert records == plain_records
    assert read_csv_metrics(tmp_path / "walk.csv") == [(r.step, flat_metrics(r)) for r in records]


@pytest.mark.slow  # imports Lightning (seconds) and trains with its Trainer
@pytest.mark.filterwarnings(LIGHTNING_LEAFSPEC)
def test_the_lightning_callback_gives_the_plain_loops_records(
    plain_records: list[StepRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    optional_library("lightning", "lightning")
    assert example("lightning_callback", monkeypatch).main() == plain_records


@pytest.mark.slow  # three fresh interpreters importing torch (one Lightning): ~30 s on 2 shared cores
@pytest.mark.parametrize("name", ["plain_loop", "attach", "lightning_callback"])
def test_each_example_runs_as_a_script(name: str) -> None:
    if name == "lightning_callback":
        optional_library("lightning", "lightning")
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["step", "lr"])
    assert len(lines[header + 1 :]) >= 40  # one line per tracked step (attach adds where its CSV went)
