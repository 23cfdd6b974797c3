"""``sgdwalk walk --log-to`` across a stop and ``--resume``: each sink holds every tracked step
of steps.jsonl exactly once; a bad target is refused before training; a sink that fails
mid-run is dropped and the run goes on.

The walk: the MLP at 5% width on tiny Fashion-MNIST files, 2 epochs of 6 steps, every step
tracked, a checkpoint after epoch 1. It is stopped at the end of epoch 2 (Ctrl-C, after the
sinks logged steps 6-11 that the checkpoint did not see), then resumed: the run directory is
cut back to steps 0-5 and steps 6-11 are made again, identically (CPU, one thread).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sgdwalk.cli import main
from sgdwalk.cli.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from sgdwalk.instrument.record import StepRecord
from sgdwalk.integrations.csv_sink import CsvSink, read_csv_metrics
from sgdwalk.integrations.metrics import flat_metrics
from sgdwalk.runs import runner
from sgdwalk.runs.runlog import METADATA_FILE, RunWriter, load_run
from sgdwalk.runs.sinks import DROPPED_SINKS_KEY, LOGGED_TO_KEY, MLFLOW_RUN_IDS_KEY
from tests.integration_helpers import optional_library

TWO_EPOCHS = [
    "--epochs", "2", "--track-epochs", "1,2", "--steps-per-window", "0", "--measurement-size", "16",
    "--batch-size", "10", "--train-subset", "0", "--width-multiplier", "0.05", "--no-figures",
    "--device", "cpu", "--no-progress",
]  # fmt: skip
RESUME = ["--no-progress", "--no-figures"]
ALL_STEPS = list(range(12))

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # MLflow 3.17's own tracking store asks SQLAlchemy 2.1 for the `noload` strategy, which 2.1
    # deprecates; it is inside MLflow, not in anything sgdwalk calls.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
]


def stop_at_the_end_of_epoch_2(monkeypatch: pytest.MonkeyPatch) -> None:
    original_entry = runner._WalkRun._epoch_entry

    def ctrl_c(self: runner._WalkRun, epoch: int, *args: Any) -> dict[str, Any]:
        if epoch == 2:
            raise KeyboardInterrupt
        return original_entry(self, epoch, *args)

    monkeypatch.setattr(runner._WalkRun, "_epoch_entry", ctrl_c)


def stopped_then_resumed(out: Path, data_flags: list[str], sink_flags: list[str]) -> list[StepRecord]:
    """Walk into ``out`` stopped in epoch 2, resume it; the run's records."""
    with pytest.MonkeyPatch.context() as patch:
        stop_at_the_end_of_epoch_2(patch)
        assert main(["walk", *TWO_EPOCHS, *data_flags, "--out", str(out), *sink_flags]) == EXIT_INTERRUPTED
    assert main(["walk", "--resume", str(out), *RESUME, *sink_flags]) == EXIT_OK
    records = load_run(out).step_records()
    assert [record.step for record in records] == ALL_STEPS
    return records


def test_csv_is_cut_back_to_the_checkpoint_and_appended(fashion_root: Path, tmp_path: Path) -> None:
    out, table = tmp_path / "run", tmp_path / "walk.csv"
    records = stopped_then_resumed(out, ["--data-root", str(fashion_root)], ["--log-to", f"csv:{table}"])
    assert read_csv_metrics(table) == [(record.step, flat_metrics(record)) for record in records]

    before = table.read_bytes()
    assert main(["walk", "--resume", str(out), *RESUME, "--log-to", f"csv:{table}"]) == EXIT_OK
    assert table.read_bytes() == before, "resuming a finished run changes no sink"


def stopped_logging_to(out: Path, fashion_root: Path, sink: str) -> None:
    """Walk into ``out`` logging to ``sink``, stopped in epoch 2."""
    with pytest.MonkeyPatch.context() as patch:
        stop_at_the_end_of_epoch_2(patch)
        code = main(["walk", *TWO_EPOCHS, "--data-root", str(fashion_root), "--out", str(out), "--log-to", sink])
        assert code == EXIT_INTERRUPTED


def test_a_resume_that_leaves_out_a_sink_says_so(
    fashion_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The copy stops at the interruption; without a word it looked complete (found by a second
    # pair of eyes). The run directory keeps the sinks it logged to (metadata.json's log_to).
    out, table = tmp_path / "run", tmp_path / "walk.csv"
    stopped_logging_to(out, fashion_root, f"csv:{table}")
    assert json.loads((out / METADATA_FILE).read_text())[LOGGED_TO_KEY] == [f"csv:{table.resolve()}"]
    with caplog.at_level(logging.WARNING, logger="sgdwalk.runs.sinks"):
        assert main(["walk", "--resume", str(out), *RESUME]) == EXIT_OK
    assert f"this run logged to --log-to csv:{table.resolve()} before; resumed without it" in caplog.text


def test_a_resume_naming_a_sink_under_another_spelling_continues_it_without_a_warning(
    fashion_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A false warning before (found by a second pair of eyes): the names were compared as written.
    out, table = tmp_path / "run", tmp_path / "walk.csv"
    stopped_logging_to(out, fashion_root, f"csv:{table}")
    with caplog.at_level(logging.WARNING, logger="sgdwalk.runs.sinks"):
        assert main(["walk", "--resume", str(out), *RESUME, "--log-to", f"csv:{tmp_path}/./walk.csv"]) == EXIT_OK
    assert "resumed without it" not in caplog.text
    records = load_run(out).step_records()
    assert read_csv_metrics(table) == [(record.step, flat_metrics(record)) for record in records]


def tensorboard_scalars(records: list[StepRecord]) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard reads back of ``records``: each value as exactly its float32 rounding (its format)."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for name, value in flat_metrics(record, "sgdwalk/").items():
            expected.setdefault(name, []).append((record.step, float(np.float32(value))))
    return expected


def test_tensorboard_purges_the_steps_after_the_checkpoint(fashion_root: Path, tmp_path: Path) -> None:
    optional_library("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sgdwalk.integrations.tensorboard_sink import TensorBoardSink

    def read_scalars() -> dict[str, list[tuple[int, float]]]:
        # 0: keep every event (the default keeps a sample).
        accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}

    out, log_dir = tmp_path / "run", tmp_path / "tb"
    data_flags, sink_flags = ["--data-root", str(fashion_root)], ["--log-to", f"tensorboard:{log_dir}"]
    # A stop that closes nothing (kill -9): what is on disk is what each record's flush put there.
    left_open: list[TensorBoardSink] = []
    with pytest.MonkeyPatch.context() as patch:
        stop_at_the_end_of_epoch_2(patch)
        patch.setattr(TensorBoardSink, "close_failed", left_open.append)
        assert main(["walk", *TWO_EPOCHS, *data_flags, "--out", str(out), *sink_flags]) == EXIT_INTERRUPTED
    logged_before_the_stop = load_run(out).step_records()
    assert [record.step for record in logged_before_the_stop] == ALL_STEPS
    assert read_scalars() == tensorboard_scalars(logged_before_the_stop)
    assert main(["walk", "--resume", str(out), *RESUME, *sink_flags]) == EXIT_OK
    for sink in left_open:
        sink.writer.close()
    records = load_run(out).step_records()
    assert [record.step for record in records] == ALL_STEPS
    assert read_scalars() == tensorboard_scalars(records)

    files = sorted(os.listdir(log_dir))
    assert main(["walk", "--resume", str(out), *RESUME, "--log-to", f"tensorboard:{log_dir}"]) == EXIT_OK
    assert sorted(os.listdir(log_dir)) == files, "resuming a finished run changes no sink"


@pytest.mark.slow  # an MLflow store round trip (importing mlflow alone takes seconds)
def test_mlflow_continues_its_run_and_leaves_none_running(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = optional_library("mlflow", "mlflow")
    from sgdwalk.integrations.mlflow_sink import MlflowSink

    monkeypatch.chdir(tmp_path)  # anything MLflow puts in the working directory stays in tmp_path
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # A stop that closes nothing (kill -9): the first run is left RUNNING.
    monkeypatch.setattr(MlflowSink, "close_failed", lambda self: None)
    out = tmp_path / "run"
    records = stopped_then_resumed(out, ["--data-root", str(fashion_root)], ["--log-to", f"mlflow:{uri}"])

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("sgdwalk").experiment_id])
    assert [run.info.status for run in runs] == ["FINISHED"], "one run, continued, ended"
    run_id = runs[0].info.run_id
    assert json.loads((out / METADATA_FILE).read_text())[MLFLOW_RUN_IDS_KEY] == {uri: run_id}
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for name, value in flat_metrics(record, "sgdwalk/").items():
            expected.setdefault(name, []).append((record.step, value))
    assert set(runs[0].data.metrics) == set(expected)
    for name, history in expected.items():
        assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, name)) == history, name


@pytest.mark.slow  # an MLflow store round trip (importing mlflow alone takes seconds)
def test_an_mlflow_run_ends_failed_when_the_walk_fails(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = optional_library("mlflow", "mlflow")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stop_at_the_end_of_epoch_2(monkeypatch)
    out = tmp_path / "run"
    flags = ["--data-root", str(fashion_root), "--out", str(out), "--log-to", f"mlflow:{uri}"]
    assert main(["walk", *TWO_EPOCHS, *flags]) == EXIT_INTERRUPTED
    run_id = json.loads((out / METADATA_FILE).read_text())[MLFLOW_RUN_IDS_KEY][uri]
    assert mlflow.MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "FAILED"


# --------------------------------------------------------------- targets checked first
def closed_local_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def bad_targets(tmp_path: Path) -> dict[str, str]:
    """A ``--log-to`` value per way a target is unusable -> what the error line says."""
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    port = closed_local_port()
    return {
        f"csv:{tmp_path}": "is a folder; name a file",
        f"csv:{a_file}/walk.csv": "is not a folder",
        f"tensorboard:{a_file}": "is a file; name a folder",
        "mlflow:not a uri": "is not a tracking URI MLflow takes",
        "mlflow:ftp://example.org/x": "is not a tracking URI MLflow takes",
        "mlflow:http://": "names no host",
        f"mlflow:http://127.0.0.1:{port}": f"no tracking server answers at 127.0.0.1:{port}",
    }


@pytest.mark.parametrize("case", range(7))
def test_an_unusable_target_is_one_line_and_exit_2_before_training(
    case: int, fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, problem = list(bad_targets(tmp_path).items())[case]
    out = tmp_path / "run"
    code = main(["walk", *TWO_EPOCHS, "--data-root", str(fashion_root), "--out", str(out), "--log-to", spec])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"sgdwalk walk: error: --log-to {spec}: ") and problem in err
    assert not out.exists(), "nothing trained, nothing written"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_is_refused(fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    flags = ["--data-root", str(fashion_root), "--out", str(tmp_path / "run"), "--log-to", f"csv:{locked / 'w.csv'}"]
    assert main(["walk", *TWO_EPOCHS, *flags]) == EXIT_USAGE
    assert "cannot be written" in capsys.readouterr().err


# --------------------------------------------------------------- a sink failing mid-run
FAILING_STEP = 3


def test_a_sink_failing_mid_run_is_dropped_and_the_run_goes_on(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    full, other = tmp_path / "full-disk.csv", tmp_path / "other.csv"
    original = CsvSink.log_metrics

    def no_space_at_step_3(self: CsvSink, metrics: dict[str, float], step: int) -> None:
        if self.path == full and step == FAILING_STEP:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(self, metrics, step)

    monkeypatch.setattr(CsvSink, "log_metrics", no_space_at_step_3)
    out = tmp_path / "run"
    flags = ["--log-to", f"csv:{full}", "--log-to", f"csv:{other}"]
    with caplog.at_level(logging.WARNING, logger="sgdwalk.runs.sinks"):
        assert main(["walk", *TWO_EPOCHS, "--data-root", str(fashion_root), "--out", str(out), *flags]) == EXIT_OK
    run = load_run(out)
    records = run.step_records()
    assert run.status == "finished" and [record.step for record in records] == ALL_STEPS
    assert read_csv_metrics(other) == [(record.step, flat_metrics(record)) for record in records]
    assert [step for step, _ in read_csv_metrics(full)] == list(range(FAILING_STEP))
    error = f"OSError: [Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}"
    assert run.metadata[DROPPED_SINKS_KEY] == [{"sink": f"csv:{full}", "step": FAILING_STEP, "error": error}]
    assert [r.getMessage() for r in caplog.records] == [
        f"--log-to csv:{full} failed at step {FAILING_STEP} and is dropped ({error}); the records are in the run directory"
    ]


# ------------------------------------------------------------ a full disk under the run
def test_a_full_disk_under_the_run_ends_it_with_one_line_and_resume_continues_once_there_is_room(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*TWO_EPOCHS, "--data-root", str(fashion_root)]
    assert main(["walk", *flags, "--out", str(tmp_path / "whole")]) == EXIT_OK
    capsys.readouterr()

    full = {"disk": False}
    write_step, update_metadata = RunWriter.write_step, RunWriter.update_metadata

    def no_space(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def filling_at_step_8(self: RunWriter, record: StepRecord) -> None:
        full["disk"] = full["disk"] or record.step == 8  # in epoch 2, after epoch 1's checkpoint
        (no_space if full["disk"] else write_step)(self, record)

    def while_full(self: RunWriter, **changes: Any) -> None:
        (no_space if full["disk"] else update_metadata)(self, **changes)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(RunWriter, "write_step", filling_at_step_8)
        patch.setattr(RunWriter, "update_metadata", while_full)
        assert main(["walk", *flags, "--out", str(out)]) == EXIT_FAILED
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if not line.startswith("run directory:")]
    assert len(lines) == 1 and "Traceback" not in error, error
    assert os.strerror(errno.ENOSPC) in error and f"continue with `sgdwalk walk --resume {out}`" in error

    assert main(["walk", "--resume", str(out), "--no-progress", "--no-figures"]) == EXIT_OK
    assert (out / "steps.jsonl").read_bytes() == (tmp_path / "whole" / "steps.jsonl").read_bytes()
    assert load_run(out).status == "finished"


# ------------------------------------------------------------------ a real kill -9
# The walk, in a process of its own, kills itself with SIGKILL right after the run directory
# took the record of step KILL_AT (before any --log-to sink saw it): no handler, no flush,
# no close runs. Two points drawn once with a seeded generator, in different epochs.
KILL_SCRIPT = """
import os, signal, sys
from sgdwalk.cli import main
from sgdwalk.runs.runlog import RunWriter
kill_at, write_step = int(sys.argv[1]), RunWriter.write_step
def write_then_die(self, record):
    write_step(self, record)
    if record.step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
RunWriter.write_step = write_then_die
sys.exit(main(sys.argv[2:]))
"""
SIX_EPOCHS = ["--epochs", "6", "--track-epochs", "1,2,3,4,5,6", *TWO_EPOCHS[4:]]
# Steps past an epoch's second (6 steps per epoch, a checkpoint after each): the sinks have
# then logged steps that the checkpoint has not seen and the resume makes again.
MID_EPOCH_STEPS = [step for step in range(7, 36) if step % 6 >= 2]
KILL_POINTS = sorted(np.random.default_rng(9).choice(MID_EPOCH_STEPS, size=2, replace=False).tolist())


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_after_a_kill_9_and_a_resume_every_sink_holds_each_step_once(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill_at: int
) -> None:
    import signal
    import subprocess
    import sys

    mlflow = optional_library("mlflow", "mlflow")
    optional_library("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    out, table, log_dir = tmp_path / "run", tmp_path / "walk.csv", tmp_path / "tb"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sinks = ["--log-to", f"csv:{table}", "--log-to", f"tensorboard:{log_dir}", "--log-to", f"mlflow:{uri}"]
    walk = ["walk", *SIX_EPOCHS, "--data-root", str(fashion_root), "--out", str(out), *sinks]
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(kill_at), *walk], capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert main(["walk", "--resume", str(out), *RESUME, *sinks]) == EXIT_OK

    records = load_run(out).step_records()
    assert [record.step for record in records] == list(range(36))
    assert read_csv_metrics(table) == [(record.step, flat_metrics(record)) for record in records]
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    assert scalars == tensorboard_scalars(records)
    client = mlflow.MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sgdwalk").experiment_id])
    assert run.info.status == "FINISHED"
    for name in ("sgdwalk/loss_start", "sgdwalk/height_start"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
        assert history == [(record.step, flat_metrics(record, "sgdwalk/")[name]) for record in records], name
