"""``torchrun --nproc-per-node 2 -m sgdwalk walk`` on a Fashion-MNIST subset, against one process.

The two processes train with DistributedDataParallel on halves of each global minibatch and
share the measurement out; process 0 alone writes the run directory. Its records are
compared with a single-process run of the same command (``python -m sgdwalk walk``).

Batch norm under DDP normalises each process's half of the batch (SyncBatchNorm, which
would normalise over the global batch, is GPU-only), so a batch-norm network trains
differently from one process on the same batch. Where the configuration can switch batch
norm off, the networks are compared without it, step by step; otherwise only what precedes
the first update (θ_0 and the epoch-0 evaluation) is compared.

A two-process run that crashed resumes under ``torchrun --nproc-per-node 2`` with the records
of the uninterrupted run, bit for bit, and is refused by one process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from sgdwalk.training.config import WalkConfig
from sgdwalk.training.data import find_dataset
from tests.helpers import Tolerance

# The same command in both runs, small enough for 2 shared cores: 10 tracked steps of 100,
# a measurement set of 200 in 4 chunks of 50 (2 per process).
WALK = [
    "walk",
    "--data",
    "fashion-mnist",
    "--train-subset",
    "1000",
    "--measurement-size",
    "200",
    "--chunk-size",
    "50",
    "--epochs",
    "1",
    "--track-epochs",
    "1",
    "--no-figures",
]

# DDP sums the two halves' float32 gradients (a different summation order from one
# process's mean over 100 samples: ~1e-7 relative per update) and float32 forward passes over
# batches of 50 instead of 100 block their sums differently; 10 SGD steps carry those
# differences into the parameters and the measured losses, well below 1e-4 relative. A sample
# lost or counted twice, or a different minibatch, moves them by 1e-2 or more.
DDP_TRAJECTORY = Tolerance(1e-4, 1e-6, "float32 gradient sums of two halves vs one batch, over 10 SGD steps")

# Compared as numbers (the rest must be equal): what the tracker measures.
MEASURED_FIELDS = (
    "minibatch_loss",
    "loss_start",
    "loss_end",
    "floor",
    "height_start",
    "height_end",
    "grad_norm",
    "step_length",
    "distance_from_init",
    "param_norm",
)


def batch_norm_switch() -> list[str]:
    """``--no-batch-norm`` where the configuration has the switch (see the module docstring)."""
    return ["--no-batch-norm"] if "batch_norm" in {field.name for field in dataclasses.fields(WalkConfig)} else []


def run(command: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(
        [*command, *WALK, *batch_norm_switch(), "--out", str(out)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def close(a: float, b: float, tolerance: Tolerance) -> bool:
    return math.isclose(a, b, rel_tol=tolerance.rtol, abs_tol=tolerance.atol)


@pytest.mark.slow
@pytest.mark.skipif(find_dataset("fashion-mnist") is None, reason="Fashion-MNIST is not on this machine")
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_walk_leaves_one_run_directory_matching_a_single_process(tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).parent / "torchrun")
    # --standalone: a free port of its own, so concurrent torchrun jobs on the machine cannot collide.
    distributed = run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "sgdwalk"], tmp_path / "ddp")
    assert distributed.returncode == 0, distributed.stderr[-3000:]
    single = run([sys.executable, "-m", "sgdwalk"], tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]

    # One run directory, written once: process 1 printed nothing and wrote nothing.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ddp", "single"]
    assert distributed.stdout.count("records:") == 1
    metadata = json.loads((tmp_path / "ddp" / "metadata.json").read_text())
    assert metadata["world_size"] == 2 and metadata["status"] == "finished"
    steps, reference = lines(tmp_path / "ddp" / "steps.jsonl"), lines(tmp_path / "single" / "steps.jsonl")
    assert [record["step"] for record in steps] == [record["step"] for record in reference] == list(range(10))

    # Before the first update both runs are the same network on the same data.
    epochs, reference_epochs = lines(tmp_path / "ddp" / "epochs.jsonl"), lines(tmp_path / "single" / "epochs.jsonl")
    for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert epochs[0][name] == reference_epochs[0][name], name
    assert steps[0]["loss_start"] == reference[0]["loss_start"]

    if not batch_norm_switch():
        return  # batch norm trains differently under DDP on the CPU (see the module docstring)
    for record, expected in zip(steps, reference, strict=True):
        for name in MEASURED_FIELDS:
            assert close(record[name], expected[name], DDP_TRAJECTORY), (record["step"], name, DDP_TRAJECTORY.reason)
        assert record["samples"] == expected["samples"] == 200


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_the_ddp_loop_example_runs_under_torchrun(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "ddp_loop.py"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "records.jsonl"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(example.parents[1])}
    finished = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", str(example), "--out", str(out), "--steps", "12"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    # Process 0 alone appends to the file and prints: both would have doubled the lines.
    records = lines(out)
    assert [record["step"] for record in records] == list(range(12))
    assert finished.stdout.count("records in") == 1
    assert [record["sharpness"] is not None for record in records] == [step % 10 == 0 for step in range(12)]


# 3 epochs of 6 steps on the 60 fixture images, every step measured on 16 images in 2 chunks
# (one per process); the checkpoint after epoch 2 is what a crash in epoch 3 resumes from.
RESUMABLE = [
    "walk", "--epochs", "3", "--checkpoint-every-epochs", "2", "--track-epochs", "1,2,3", "--steps-per-window", "0",
    "--measurement-size", "16", "--chunk-size", "8", "--batch-size", "10", "--train-subset", "0",
    "--width-multiplier", "0.05", "--device", "cpu", "--no-figures", "--no-progress",
]  # fmt: skip


def run_in(command: list[str], data_root: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    environment["SGDWALK_DATA_ROOT"] = str(data_root)
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300, check=False)


def checkpoint_epoch(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["epoch"])


def without_seconds(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in entry.items() if key != "seconds"} for entry in entries]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_a_crashed_two_process_run_resumes_under_torchrun_on_its_trajectory_and_is_refused_on_one(
    fashion_root: Path, tmp_path: Path
) -> None:
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "sgdwalk"]
    out = tmp_path / "run"
    finished = run_in([*torchrun, *RESUMABLE, "--out", str(out)], fashion_root)
    assert finished.returncode == 0, finished.stderr[-3000:]
    steps = (out / "steps.jsonl").read_bytes()
    epochs = without_seconds(lines(out / "epochs.jsonl"))
    # What a crash in epoch 3 leaves: the metadata not finished, the checkpoint of epoch 2.
    metadata = json.loads((out / "metadata.json").read_text())
    (out / "metadata.json").write_text(json.dumps({**metadata, "status": "interrupted", "finished": None}))
    assert checkpoint_epoch(out / "checkpoint.pt") == 2

    single = run_in([sys.executable, "-m", "sgdwalk", "walk", "--resume", str(out), "--no-figures"], fashion_root)
    assert single.returncode == 2, single.stderr[-3000:]
    (line,) = single.stderr.splitlines()
    assert "ran under 2 processes and is resumed under 1 process" in line, line
    assert f"`torchrun --nproc-per-node 2 -m sgdwalk walk --resume {out}`" in line, line
    assert (out / "steps.jsonl").read_bytes() == steps

    resumed = run_in([*torchrun, "walk", "--resume", str(out), "--no-figures", "--no-progress"], fashion_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("records:") == 1
    # Epoch 3 made again by two processes from the checkpoint: the records of the uninterrupted run.
    assert (out / "steps.jsonl").read_bytes() == steps
    assert without_seconds(lines(out / "epochs.jsonl")) == epochs
    metadata = json.loads((out / "metadata.json").read_text())
    assert (metadata["status"], metadata["world_size"], metadata["world_sizes"]) == ("finished", 2, [2, 2])
