"""Reliability: one writer per run directory, records in order, a cut
checkpoint, divergence by a stated rule, and help that needs no torch.

Runs are the MLP at 5% width on tiny Fashion-MNIST files (``tests.fixtures_data``) through
``sgdwalk.cli.main`` in-process; the processes that must be separate (another owner of a run
directory, a fresh interpreter for the help) are started as subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from sgdwalk.claims.engine import run_divergence
from sgdwalk.cli import main
from sgdwalk.cli.commands.walk import _interrupted_message
from sgdwalk.cli.exits import EXIT_DIVERGED, EXIT_USAGE
from sgdwalk.instrument.divergence import DIVERGENCE_LOSS_FACTOR, loss_divergence, losses_divergence
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.schedule import windows
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.runs.owner import LOCK_FILE, RunDirectoryBusyError, acquire_run_directory, release_run_directory
from sgdwalk.runs.runlog import CHECKPOINT_FILE, EPOCHS_FILE, METADATA_FILE, STEPS_FILE, RunDirectoryError, load_run
from sgdwalk.runs.runner import WalkResult, resume_walk
from sgdwalk.runs.world import world_sizes_after
from sgdwalk.training.config import WalkConfig

# A fresh interpreter that imports only the owner module starts in well under a second; a
# slow, shared CPU gets ten times that.
HOLDER_START_SECONDS = 10.0
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# 2 epochs of 6 steps (60 images at batch 10), every step measured on 16 images.
TWO_EPOCHS = [
    "--epochs", "2", "--track-epochs", "1,2", "--steps-per-window", "0", "--measurement-size", "16",
    "--batch-size", "10", "--train-subset", "0", "--width-multiplier", "0.05", "--no-figures",
    "--device", "cpu", "--no-progress",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def finished_run(fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "run"
    assert main(["walk", *TWO_EPOCHS, "--data-root", str(fashion_root), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def mark_interrupted(run_dir: Path) -> None:
    """What a run killed mid-way leaves in its metadata."""
    metadata = json.loads((run_dir / METADATA_FILE).read_text(encoding="utf-8"))
    metadata.update(status="interrupted", finished=None)
    (run_dir / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


# ---------------------------------------------------------------- one writer per run
@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, Path]]:
    """Another process owning two run directories: a resumable run's and an empty one."""
    resumable, empty = tmp_path / "held-run", tmp_path / "held-empty"
    script = (
        "import sys, time\n"
        "from sgdwalk.runs.owner import acquire_run_directory\n"
        "for directory in sys.argv[1:]:\n"
        "    acquire_run_directory(directory)\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(resumable), str(empty)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        started = time.monotonic()
        assert process.stdout.readline().strip() == "held"
        assert time.monotonic() - started < HOLDER_START_SECONDS
        yield process, resumable, empty
    finally:
        process.kill()
        process.communicate()  # reaps it and closes its pipe


def test_a_second_writer_of_a_run_directory_gets_exit_2_naming_the_holder(
    holder: tuple[subprocess.Popen[str], Path, Path],
    finished_run: Path,
    fashion_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    process, resumable, empty = holder
    # A resumable run the other process is writing: its files, then `--resume`.
    for name in (METADATA_FILE, "config.json", STEPS_FILE, EPOCHS_FILE, CHECKPOINT_FILE):
        (resumable / name).write_bytes((finished_run / name).read_bytes())
    mark_interrupted(resumable)
    steps_before = (resumable / STEPS_FILE).read_bytes()

    assert main(["walk", "--resume", str(resumable), "--no-figures"]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert f"pid {process.pid} on host {socket.gethostname()}, since " in line and str(resumable) in line
    assert (resumable / STEPS_FILE).read_bytes() == steps_before

    # A new run into a directory another process owns.
    assert main(["walk", *TWO_EPOCHS, "--data-root", str(fashion_root), "--out", str(empty)]) == EXIT_USAGE
    assert f"pid {process.pid}" in one_error_line(capsys)
    assert sorted(path.name for path in empty.iterdir()) == [LOCK_FILE]


def test_the_lock_of_a_killed_owner_is_taken_over(holder: tuple[subprocess.Popen[str], Path, Path]) -> None:
    process, resumable, _ = holder
    with pytest.raises(RunDirectoryBusyError, match=f"pid {process.pid}"):
        acquire_run_directory(resumable)
    process.send_signal(signal.SIGKILL)  # kill -9: no chance to release anything
    process.wait()
    acquire_run_directory(resumable)  # the kernel released the dead owner's lock
    try:
        holder_record = json.loads((resumable / LOCK_FILE).read_text(encoding="utf-8"))
        assert holder_record["pid"] == os.getpid()
    finally:
        release_run_directory(resumable)


@pytest.mark.slow  # two fresh interpreters importing torch: ~11 s, run by scripts/test.sh's slow step
def test_a_run_resumed_twice_at_once_is_refused_the_second_time_as_processes(
    finished_run: Path, tmp_path: Path, fashion_root: Path
) -> None:
    """Two `sgdwalk walk --resume DIR` at once. The first resumes (made to
    wait before it finishes), the second gets exit 2 and the first's pid."""
    mark_interrupted(finished_run)
    (finished_run / "summary.json").unlink()
    slow_first = (
        "import sys, time\n"
        "from sgdwalk.runs import runner\n"
        "finish = runner._WalkRun._finish\n"
        "def slow(self, *args):\n"
        "    print('resuming', flush=True)\n"
        "    time.sleep(60)\n"
        "    return finish(self, *args)\n"
        "runner._WalkRun._finish = slow\n"
        "from sgdwalk.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    plain = "import sys\nfrom sgdwalk.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "SGDWALK_DATA_ROOT": str(fashion_root)}
    command = ["walk", "--resume", str(finished_run), "--no-figures", "--no-progress"]
    first = subprocess.Popen(
        [sys.executable, "-c", slow_first, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment,
    )  # fmt: skip
    try:
        assert first.stdout is not None
        assert first.stdout.readline().strip() == "resuming"
        second = subprocess.run(
            [sys.executable, "-c", plain, *command], capture_output=True, text=True, env=environment, timeout=120
        )
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == EXIT_USAGE, second.stderr
    (line,) = second.stderr.splitlines()
    assert f"pid {first.pid} on host" in line


# ------------------------------------------------------------------ records in order
def test_load_run_refuses_steps_out_of_order_or_repeated(finished_run: Path) -> None:
    lines = (finished_run / STEPS_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    (finished_run / STEPS_FILE).write_text("".join(lines + lines[3:6]), encoding="utf-8")  # a second writer's
    with pytest.raises(RunDirectoryError, match=r"steps.jsonl: record \d+ has step 3 after step 11; records out"):
        load_run(finished_run)


def test_load_run_refuses_epochs_out_of_order_or_repeated(finished_run: Path) -> None:
    lines = (finished_run / EPOCHS_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    (finished_run / EPOCHS_FILE).write_text("".join([*lines[:2], lines[1], *lines[2:]]), encoding="utf-8")
    with pytest.raises(RunDirectoryError, match=r"epochs\.jsonl: record 3 has epoch 1 after epoch 1"):
        load_run(finished_run)


# ------------------------------------------------------------------- a cut checkpoint
def test_a_cut_checkpoint_then_resume_is_one_line_and_exit_2(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = finished_run / CHECKPOINT_FILE
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    mark_interrupted(finished_run)
    assert main(["walk", "--resume", str(finished_run), "--no-figures"]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert "checkpoint.pt cannot be read" in line and "remove it" in line


# ------------------------------------------------------------ distributed resumes
def as_two_process_run(run_dir: Path) -> None:
    """The metadata a crashed `torchrun --nproc-per-node 2` run leaves (its files are
    otherwise a single-process run's: the refusal must come before any of them is read)."""
    metadata = json.loads((run_dir / METADATA_FILE).read_text(encoding="utf-8"))
    metadata.update(world_size=2, world_sizes=[2])
    (run_dir / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")
    mark_interrupted(run_dir)


def test_a_two_process_run_resumed_by_one_process_is_refused_naming_both_sizes_and_torchrun(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    as_two_process_run(finished_run)
    files_before = {path.name: path.read_bytes() for path in finished_run.iterdir() if path.is_file()}

    assert main(["walk", "--resume", str(finished_run), "--no-figures"]) == EXIT_USAGE
    line = one_error_line(capsys)
    assert "ran under 2 processes" in line and "resumed under 1 process" in line, line
    assert f"`torchrun --nproc-per-node 2 -m sgdwalk walk --resume {finished_run}`" in line, line
    # Refused before anything was written: the metadata still says interrupted, under 2.
    assert {path.name: path.read_bytes() for path in finished_run.iterdir() if path.is_file()} == files_before

    # The library entry refuses it too (the command line checks before making a process group).
    with pytest.raises(RunDirectoryError, match="ran under 2 processes and is resumed under 1 process"):
        resume_walk(finished_run)


def test_the_metadata_lists_every_world_size_across_a_resume(
    finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert json.loads((finished_run / METADATA_FILE).read_text(encoding="utf-8"))["world_sizes"] == [1]
    steps_before = (finished_run / STEPS_FILE).read_bytes()
    mark_interrupted(finished_run)
    (finished_run / CHECKPOINT_FILE).unlink()  # crashed before its first checkpoint: retrained from the start

    assert main(["walk", "--resume", str(finished_run), "--no-figures"]) == 0
    capsys.readouterr()
    metadata = json.loads((finished_run / METADATA_FILE).read_text(encoding="utf-8"))
    assert (metadata["world_size"], metadata["world_sizes"], metadata["status"]) == (1, [1, 1], "finished")
    assert (finished_run / STEPS_FILE).read_bytes() == steps_before  # the same trajectory, remade


def test_world_sizes_of_a_run_recorded_before_the_list_start_from_its_world_size() -> None:
    assert world_sizes_after({"world_size": 2}, 2) == [2, 2]
    assert world_sizes_after({}, 1) == [1, 1]  # before world_size too: one process
    assert world_sizes_after({"world_size": 2, "world_sizes": [2, 2]}, 2) == [2, 2, 2]


def test_the_interrupt_message_names_the_run_s_own_number_of_processes(finished_run: Path) -> None:
    assert _interrupted_message(finished_run).endswith(f"`sgdwalk walk --resume {finished_run}`")
    as_two_process_run(finished_run)
    message = _interrupted_message(finished_run)
    assert message.endswith(f"`torchrun --nproc-per-node 2 -m sgdwalk walk --resume {finished_run}`")


# ------------------------------------------------------------------------ divergence
def test_a_finite_blow_up_is_a_divergence_not_finished(
    fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["walk", *TWO_EPOCHS, "--lr", "50", "--data-root", str(fashion_root), "--out", str(out)])
    assert code == EXIT_DIVERGED
    run = load_run(out)
    assert run.status == "diverged" and "times its starting value" in run.metadata["divergence"]
    assert "diverged" in capsys.readouterr().err


@pytest.mark.slow  # a whole run on Fashion-MNIST files to its divergence
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_issue_11s_lr_50_run_diverges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--lr 50 --epochs 2 --track-epochs 1,2 --train-subset 2000 --measurement-size 500` ended
    "finished" with exit 0 and a training loss of 2.5e18."""
    out = tmp_path / "run"
    flags = ["--lr", "50", "--epochs", "2", "--track-epochs", "1,2", "--train-subset", "2000"]
    flags += ["--measurement-size", "500", "--no-figures", "--no-progress", "--device", "cpu"]
    assert main(["walk", *flags, "--data-root", str(DEBIAN_FASHION_MNIST), "--out", str(out)]) == EXIT_DIVERGED
    assert load_run(out).status == "diverged"


def test_the_rule_is_a_multiple_of_the_start_and_finiteness() -> None:
    assert loss_divergence(2.0 * DIVERGENCE_LOSS_FACTOR, 2.0) is None
    assert loss_divergence(2.0 * DIVERGENCE_LOSS_FACTOR * 1.001, 2.0) is not None
    assert loss_divergence(float("nan"), 2.0) == "non-finite loss nan"
    assert loss_divergence(1e300, 0.0) is None  # a walk starting at zero loss: finiteness only
    assert loss_divergence(1e300, 2.0, factor=None) is None
    assert losses_divergence([("epoch 0", 2.3), ("epoch 1", None), ("epoch 2", 2.3e4)]) is not None
    assert losses_divergence([("epoch 0", 2.3), ("epoch 1", 64.0)]) is None  # a recovering spike (28x)


def test_the_tracker_applies_the_rule_when_given_the_factor() -> None:
    model = torch.nn.Linear(2, 2)
    measurement = MeasurementSet(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    losses = [2.0, 1500.0, 2001.0, 1.0]

    def walk(factor: float | None) -> WalkTracker:
        tracker = WalkTracker(model, measurement, schedule=windows([]), divergence_loss_factor=factor)
        for loss in losses:
            with tracker.step(minibatch_loss=loss):
                pass
        return tracker

    assert walk(None).divergence is None
    ruled = walk(DIVERGENCE_LOSS_FACTOR)
    assert ruled.divergence == "step 2: minibatch loss 2001 exceeds 1000 times its starting value 2"
    assert ruled.state_dict()["start_loss"] == 2.0


def test_the_claims_engine_judges_a_recorded_run_by_the_same_rule() -> None:
    def result(train_losses: list[float]) -> WalkResult:
        history = [{"epoch": epoch, "train_loss": loss} for epoch, loss in enumerate(train_losses)]
        config = WalkConfig(epochs=2, track_epochs=())
        return WalkResult(config, [], history, [], "finished", None, 1)

    assert run_divergence(result([2.3, 1.2, 0.9])) is None
    reason = run_divergence(result([2.3, 2.04e20, 1.36e19]))  # a run at lr 50, as a user's diverged
    assert reason is not None and reason.startswith("epoch 1: training loss 2.04e+20 exceeds")


# -------------------------------------------------------------------- help, no torch
# The issue asks each of these for under 0.5 s. What is asserted without fail is that torch
# (and pandas, matplotlib) are not imported; the time, which a loaded shared CPU can stretch,
# is the fastest of HELP_TRIES fresh interpreters against HELP_SECONDS_BOUND.
HELP_COMMANDS = [
    ["--help"],
    ["walk", "--help"],
    ["sweep", "--help"],
    ["plot", "--help"],
    ["claims", "--help"],
    ["claims", "list"],
    ["claims", "compare", "--help"],
    ["claims", "table", "--help"],
    ["claims", "merge", "--help"],
]
HEAVY_MODULES = ("torch", "pandas", "matplotlib", "scipy")
HELP_TRIES = 3
# Measured on the 2-core laptop with other test runs on it: 0.13-0.25 s per fresh interpreter
# (Python's own start included); 0.5 s is the issue's budget.
HELP_SECONDS_BOUND = 0.5
_HELP_SCRIPT = """
import sys
from sgdwalk.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(",".join(name for name in {heavy!r} if name in sys.modules), file=sys.stderr)
"""


@pytest.mark.slow  # a fresh interpreter per command
@pytest.mark.parametrize("argv", HELP_COMMANDS, ids=[" ".join(argv) for argv in HELP_COMMANDS])
def test_help_and_the_claims_listing_import_no_torch(argv: list[str]) -> None:
    script = _HELP_SCRIPT.format(heavy=HEAVY_MODULES)
    seconds = []
    for _ in range(HELP_TRIES):
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60)
        seconds.append(time.perf_counter() - started)
        assert completed.stdout, completed.stderr
        assert completed.stderr.strip().splitlines()[-1:] in ([], [""]), f"imported: {completed.stderr}"
    assert min(seconds) < HELP_SECONDS_BOUND, seconds
