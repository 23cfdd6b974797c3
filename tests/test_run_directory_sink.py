"""``RunDirectorySink``: a run from a loop of one's own is a run directory that ``load_run`` and
``sgdwalk plot`` read as they read one ``sgdwalk walk`` wrote.

The records read back are compared with the tracker's own, exactly (JSON keeps every float).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import sgdwalk
from sgdwalk.cli import main
from sgdwalk.instrument.record import StepRecord
from sgdwalk.runs.runlog import CONFIG_FILE, SUMMARY_FILE, RunDirectoryError
from sgdwalk.runs.runner import resume_walk
from sgdwalk.runs.summary import summarize_windows
from tests.helpers import classification_data, mlp

STEPS_PER_EPOCH, EPOCHS, BATCH = 3, 2, 8
TRAIN_SIZE = STEPS_PER_EPOCH * BATCH
DESCRIPTION = {"model": "mlp 4-6-3", "optimizer": "sgd", "lr": 0.5}


class Broken(Exception):
    """What the failing loop raises."""


def own_loop(
    run: sgdwalk.RunDirectorySink, *, epochs: int = EPOCHS, fail_at_epoch: int | None = None
) -> list[StepRecord]:
    """An attached tracker writing into ``run``; an epoch line per epoch; ``fail_at_epoch`` raises there."""
    model = mlp(0)
    inputs, targets = classification_data(0, TRAIN_SIZE)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = sgdwalk.WalkTracker(model, sgdwalk.MeasurementSet(inputs, targets), num_alphas=4, sinks=[run])
    with tracker.attach(optimizer):
        for epoch in range(1, epochs + 1):
            if epoch == fail_at_epoch:
                raise Broken("the loop broke")
            for first in range(0, TRAIN_SIZE, BATCH):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(inputs[first : first + BATCH]), targets[first : first + BATCH])
                loss.backward()
                tracker.note_loss(loss)
                optimizer.step()
            with torch.no_grad():
                train_loss = float(nn.functional.cross_entropy(model(inputs), targets))
            run.log_epoch(epoch, train_loss=train_loss)
    return tracker.close()


@pytest.mark.slow  # a loop's run read back and every figure drawn: an end-to-end check
def test_load_run_reads_the_loops_records_and_plot_draws_them(tmp_path: Path) -> None:
    run_dir = tmp_path / "mine"
    with sgdwalk.RunDirectorySink(run_dir, steps_per_epoch=STEPS_PER_EPOCH, description=DESCRIPTION) as sink:
        records = own_loop(sink)
    assert len(records) == STEPS_PER_EPOCH * EPOCHS
    run = sgdwalk.load_run(run_dir)
    assert run.step_records() == records
    assert run.written_by_loop and run.walk_config is None and not (run_dir / CONFIG_FILE).exists()
    assert run.status == "finished" and run.metadata["description"] == DESCRIPTION
    assert run.steps["epoch"].tolist() == [1, 1, 1, 2, 2, 2]
    assert [entry["epoch"] for entry in run.epoch_entries()] == [1, 2]
    summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    expected_windows = summarize_windows([r.as_dict() for r in records], run.epoch_entries(), STEPS_PER_EPOCH)
    assert summary["windows"] == json.loads(json.dumps([w.as_dict() for w in expected_windows]))

    assert main(["plot", str(run_dir), "--out", str(tmp_path / "figures")]) == 0
    names = sorted(path.name for path in (tmp_path / "figures").iterdir())
    assert names == ["barriers.png", "heights.png", "training.png", "walk_epoch1.png", "walk_epoch2.png"]


def test_without_epochs_the_windows_are_runs_of_steps(tmp_path: Path) -> None:
    with sgdwalk.RunDirectorySink(tmp_path / "run") as sink:
        records = own_loop(sink, epochs=1)
    run = sgdwalk.load_run(tmp_path / "run")
    assert run.step_records() == records and run.steps["epoch"].isna().all()
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "figures")]) == 0
    assert (tmp_path / "figures" / f"walk_steps0-{STEPS_PER_EPOCH - 1}.png").is_file()


def test_a_loop_that_raises_leaves_a_failed_run_with_its_records(tmp_path: Path) -> None:
    with pytest.raises(Broken), sgdwalk.RunDirectorySink(tmp_path / "run", steps_per_epoch=STEPS_PER_EPOCH) as sink:
        own_loop(sink, fail_at_epoch=2)
    run = sgdwalk.load_run(tmp_path / "run")
    assert run.status == "failed" and run.metadata["error"] == "Broken: the loop broke"
    assert [r.step for r in run.step_records()] == list(range(STEPS_PER_EPOCH))
    assert not (tmp_path / "run" / SUMMARY_FILE).exists()
    with pytest.raises(RunDirectoryError, match="loop of its own"):
        resume_walk(tmp_path / "run")  # unfinished: still nothing the CLI could continue it with


def test_the_cli_cannot_resume_a_loops_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with sgdwalk.RunDirectorySink(tmp_path / "run") as sink:
        own_loop(sink, epochs=1)
    with pytest.raises(RunDirectoryError, match="loop of its own"):
        resume_walk(tmp_path / "run")
    assert main(["walk", "--resume", str(tmp_path / "run")]) == 2
    assert "loop of its own" in capsys.readouterr().err
    with pytest.raises(RunDirectoryError, match="no WalkConfig"):
        _ = sgdwalk.load_run(tmp_path / "run").config


def test_a_directory_holding_a_run_is_refused(tmp_path: Path) -> None:
    with sgdwalk.RunDirectorySink(tmp_path / "run") as sink:
        own_loop(sink, epochs=1)
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        sgdwalk.RunDirectorySink(tmp_path / "run")


def test_epochs_must_increase_and_a_closed_run_takes_nothing(tmp_path: Path) -> None:
    sink = sgdwalk.RunDirectorySink(tmp_path / "run")
    sink.log_epoch(1, train_loss=1.0)
    with pytest.raises(ValueError, match="epochs must increase"):
        sink.log_epoch(1, train_loss=0.5)
    sink.finish()
    with pytest.raises(RuntimeError, match="closed"):
        sink.log_epoch(2, train_loss=0.5)
