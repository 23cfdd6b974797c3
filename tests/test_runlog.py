"""Records on disk (config, run writer, ``load_run``) and the window summaries computed from them."""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from sgdwalk.instrument.record import RECORD_FIELDS, StepRecord
from sgdwalk.runs.owner import LOCK_FILE, hold_run_directory
from sgdwalk.runs.runlog import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT_VERSION,
    EPOCHS_FILE,
    METADATA_FILE,
    STEPS_FILE,
    SUMMARY_FILE,
    RunDirectoryError,
    RunWriter,
    base_metadata,
    clear_run_files,
    count_step_records,
    cut_record_files,
    dumps_line,
    last_epoch_entry,
    load_run,
    read_checkpoint,
    run_status,
)
from sgdwalk.runs.summary import render_table, summarize_windows
from sgdwalk.training.config import ConfigError, WalkConfig, read_config_file

NUM_ALPHAS = 4


def make_record(
    step: int,
    *,
    height: float = 0.1,
    cosine: float | None = -0.5,
    barrier: float = 0.0,
    height_se: float | None = None,
    barrier_test: str | None = None,
) -> StepRecord:
    """A self-consistent record: a parabola-like segment from 1.0 down to 1 − height … and back."""
    alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
    losses = (1.0, 1.0 - height, 1.0 - height / 2 + barrier, 1.0 - height / 4, 0.99)
    return StepRecord(
        step=step,
        lr=0.1,
        minibatch_loss=1.01 + step * 1e-3,
        loss_start=losses[0],
        loss_end=losses[-1],
        floor=1.0 - height,
        alpha_star=0.25,
        interior_floor=height > 0,
        floor_refined=1.0 - height,
        alpha_star_refined=0.25,
        height_start=height,
        height_end=0.99 - (1.0 - height),
        barrier=barrier > 0,
        barrier_height=barrier,
        barrier_alpha=0.5 if barrier > 0 else None,
        cosine=cosine,
        grad_norm=1.0 / 3.0,  # not a short decimal: the JSON round trip must keep every bit
        step_length=0.01 * math.pi,
        distance_from_init=0.1 * (step + 1),
        param_norm=10.0 + step,
        sharpness=None,
        segment_alphas=alphas,
        segment_losses=losses,
        samples=None if height_se is None else 500 + step,
        segment_loss_se=None if height_se is None else tuple(2 * height_se for _ in losses),
        segment_floor_se=None if height_se is None else tuple(height_se * (i != 1) for i in range(len(losses))),
        height_start_se=height_se,
        height_end_se=height_se,
        floor_depth=None if height_se is None else 0.99 - (1.0 - height),
        floor_depth_se=height_se,
        barrier_excess=None if height_se is None else barrier - height / 2,
        barrier_excess_se=height_se,
        barrier_test=barrier_test,
    )


def rows_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame's rows as load_run's callers take them (pandas-stubs types the keys as any Hashable)."""
    return [{str(key): value for key, value in row.items()} for row in frame.to_dict("records")]


def write_run(
    run_dir: Path, records: list[StepRecord], epochs: Sequence[Mapping[str, Any]], steps_per_epoch: int
) -> None:
    config = WalkConfig(num_alphas=NUM_ALPHAS, out_dir=str(run_dir))
    metadata = base_metadata(config, torch.device("cpu"))
    metadata["steps_per_epoch"] = steps_per_epoch
    writer = RunWriter.create(run_dir, config, metadata)
    for record in records:
        writer.write_step(record)
    for entry in epochs:
        writer.write_epoch(entry)
    writer.write_summary({"status": "finished"})
    writer.update_metadata(status="finished")
    writer.close()


# ------------------------------------------------------------------------- config
def test_config_round_trips_through_json(tmp_path: Path) -> None:
    config = WalkConfig(arch="vgg11", data="cifar10", track_epochs=(1, 3), lr_milestones=(2,), epochs=3, lr_max=None)
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    restored = WalkConfig.from_dict(read_config_file(path))
    assert restored == config
    assert isinstance(restored.track_epochs, tuple)


def test_config_reads_toml_with_either_spelling(tmp_path: Path) -> None:
    path = tmp_path / "walk.toml"
    path.write_text('arch = "convnet"\ntrack-epochs = [1, 2]\nepochs = 2\nlr = 0.05\n')
    config = WalkConfig.from_dict(read_config_file(path))
    assert (config.arch, config.track_epochs, config.lr) == ("convnet", (1, 2), 0.05)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"learning_rate": 0.1}, "unknown configuration key"),
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"arch": "alexnet"}, "arch must be one of"),
        ({"epochs": 3, "track_epochs": [1, 4]}, "outside the run's epochs"),
        ({"lr": -0.1}, "lr must be positive"),
        ({"noise_batches": 1}, "at least 2"),
        ({"bn_mode": "frozen"}, "bn_mode must be one of"),
        # Types before ranges: each of these passed validation once, then broke the run.
        ({"batch_size": 100.0, "epochs": 1, "track_epochs": [1]}, "batch_size must be an integer, got 100.0"),
        ({"epochs": 1.5, "track_epochs": [1]}, "epochs must be an integer"),
        ({"num_alphas": 3.7}, "num_alphas must be an integer"),
        ({"out_dir": 5}, "out_dir must be a string"),
        ({"data_root": 5}, "data_root must be a string"),
        ({"weight_decay": "x"}, "weight_decay must be a number"),
        ({"progress": "yes"}, "progress must be true or false"),
        # Non-finite settings are no settings.
        ({"lr": math.inf}, "lr must be a finite number"),
        ({"weight_decay": math.nan}, "weight_decay must be a finite number"),
        ({"width_multiplier": math.inf}, "width_multiplier must be a finite number"),
        ({"height_se": math.nan, "measurement_mode": "targeted"}, "height_se must be a finite number"),
    ],
)
def test_config_rejects_bad_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WalkConfig.from_dict(values)


def test_config_hash_follows_what_changes_the_records() -> None:
    base = WalkConfig()
    assert base.replace(out_dir="elsewhere", progress=False).result_hash == base.result_hash
    assert base.replace(lr=0.05).result_hash != base.result_hash


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.json"):
        read_config_file(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "absent.json")


# ------------------------------------------------------------------------- writer
def test_load_run_round_trip(tmp_path: Path) -> None:
    records = [make_record(step, height=0.1 * (step + 1), cosine=None if step == 0 else -0.5) for step in range(6)]
    epochs = [{"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.8, "sharpness": None}]
    write_run(tmp_path / "run", records, epochs, steps_per_epoch=4)

    run = load_run(tmp_path / "run")
    assert run.status == "finished"
    assert run.config.num_alphas == NUM_ALPHAS
    assert list(run.steps.columns) == [*RECORD_FIELDS, "epoch"]
    assert run.steps["epoch"].tolist() == [1, 1, 1, 1, 2, 2]
    assert run.step_records() == records  # bitwise: floats survive the JSON round trip
    assert run.epochs["train_loss"].tolist() == [0.5]
    assert run.summary == {"status": "finished"}

    alphas, losses, steps = run.segment_curves()
    np.testing.assert_array_equal(alphas, records[0].segment_alphas)
    assert losses.shape == (6, NUM_ALPHAS + 1)
    np.testing.assert_array_equal(losses[3], records[3].segment_losses)
    np.testing.assert_array_equal(steps, np.arange(6))


def test_an_empty_run_has_empty_frames_and_curves(tmp_path: Path) -> None:
    write_run(tmp_path / "run", [], [], steps_per_epoch=4)
    run = load_run(tmp_path / "run")
    assert run.steps.empty and list(run.steps.columns) == [*RECORD_FIELDS, "epoch"]
    alphas, losses, steps = run.segment_curves()
    assert alphas.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert losses.shape == (0, NUM_ALPHAS + 1) and steps.shape == (0,)


def test_a_line_cut_by_a_crash_is_dropped_but_a_broken_middle_line_is_an_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, [make_record(0), make_record(1)], [], steps_per_epoch=4)
    steps_file = run_dir / STEPS_FILE
    steps_file.write_text(steps_file.read_text() + '{"step": 2, "lr": 0.')
    metadata_file = run_dir / METADATA_FILE
    finished = metadata_file.read_text()
    # A run that crashed: the line in flight is left out, and named.
    metadata_file.write_text(json.dumps({**json.loads(finished), "status": "failed"}))
    crashed = load_run(run_dir)
    assert crashed.steps["step"].tolist() == [0, 1] and crashed.cut_files == (STEPS_FILE,)
    assert cut_record_files(run_dir) == (STEPS_FILE,)
    # A run that finished wrote every line whole: a cut one is damage, not a crash tail.
    metadata_file.write_text(finished)
    with pytest.raises(RunDirectoryError, match="cut short"):
        load_run(run_dir)

    lines = steps_file.read_text().splitlines()
    steps_file.write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n")
    with pytest.raises(RunDirectoryError, match=f"{STEPS_FILE}:2"):
        load_run(run_dir)


def test_status_last_epoch_and_record_count_without_reading_the_whole_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run_status(run_dir) == "missing"
    run_dir.mkdir()
    (run_dir / STEPS_FILE).write_text("")  # killed while being created
    assert run_status(run_dir) == "incomplete"
    (run_dir / STEPS_FILE).unlink()

    epochs = [{"epoch": 0, "train_loss": 2.3}, {"epoch": 1, "train_loss": 1.5}]
    write_run(run_dir, [make_record(0), make_record(1)], epochs, steps_per_epoch=4)
    assert run_status(run_dir) == "finished"
    (run_dir / STEPS_FILE).write_text((run_dir / STEPS_FILE).read_text() + '{"step": 2, "lr"')
    (run_dir / EPOCHS_FILE).write_text((run_dir / EPOCHS_FILE).read_text() + '{"epoch": 2, "tr')
    assert count_step_records(run_dir) == 2  # the line cut by a crash is not a record
    assert last_epoch_entry(run_dir) == epochs[-1]
    # A finished run's summary holds its final epoch; it wins over the epochs file.
    (run_dir / SUMMARY_FILE).write_text(json.dumps({"final_epoch": {"epoch": 1, "train_loss": 1.25}}))
    assert last_epoch_entry(run_dir) == {"epoch": 1, "train_loss": 1.25}

    clear_run_files(run_dir)
    assert run_status(run_dir) == "missing"


def test_a_checkpoint_round_trips_with_the_record_counts_it_saw(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert read_checkpoint(run_dir, torch.device("cpu")) is None  # died before its first one
    write_run(run_dir, [make_record(0), make_record(1)], [{"epoch": 0}], steps_per_epoch=4)
    writer = RunWriter.reopen(run_dir, steps_kept=2, epochs_kept=1)
    writer.write_checkpoint({"epoch": 1, "weights": torch.arange(3.0)})
    writer.close()
    checkpoint = read_checkpoint(run_dir, torch.device("cpu"))
    assert checkpoint is not None
    assert (checkpoint["epoch"], checkpoint["steps_written"], checkpoint["epochs_written"]) == (1, 2, 1)
    assert torch.equal(checkpoint["weights"], torch.arange(3.0))

    torch.save({**checkpoint, "format_version": CHECKPOINT_FORMAT_VERSION + 1}, run_dir / CHECKPOINT_FILE)
    with pytest.raises(RunDirectoryError, match="checkpoint format"):
        read_checkpoint(run_dir, torch.device("cpu"))


def test_create_refuses_a_directory_that_holds_a_run(tmp_path: Path) -> None:
    write_run(tmp_path / "run", [make_record(0)], [], steps_per_epoch=4)
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        RunWriter.create(tmp_path / "run", WalkConfig(), {})


def test_reopen_keeps_what_the_checkpoint_saw(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_run(run_dir, [make_record(step) for step in range(5)], [{"epoch": 1}, {"epoch": 2}], steps_per_epoch=4)
    writer = RunWriter.reopen(run_dir, steps_kept=3, epochs_kept=1)
    assert (writer.steps_written, writer.epochs_written) == (3, 1)
    writer.write_step(make_record(3))
    writer.close()
    run = load_run(run_dir)
    assert run.steps["step"].tolist() == [0, 1, 2, 3]
    assert len(run.epochs) == 1
    assert run.status == "running" and run.summary == {}
    assert run.metadata["resumed"][0]["after_epoch"] == 1
    with pytest.raises(RunDirectoryError, match="checkpoint saw 9"):
        RunWriter.reopen(run_dir, steps_kept=9, epochs_kept=0)


def test_non_finite_values_are_written_as_strings_in_strict_json() -> None:
    line = dumps_line({"loss": float("nan"), "values": (1.0, float("-inf")), "flag": np.bool_(True), "n": np.int64(3)})
    # Strict JSON: json.loads with parse_constant refusing NaN/Infinity would raise otherwise.
    assert json.loads(line, parse_constant=lambda name: pytest.fail(f"non-standard {name}")) == {
        "loss": "nan", "values": [1.0, "-inf"], "flag": True, "n": 3,
    }  # fmt: skip


def test_a_run_read_back_keeps_missing_values_and_non_finite_ones_apart(tmp_path: Path) -> None:
    epochs: list[dict[str, Any]] = [
        {"epoch": 0, "train_loss": 2.3, "sharpness": None, "lr_first": None},
        {"epoch": 1, "train_loss": float("nan"), "sharpness": float("inf"), "lr_first": 0.1},
    ]
    write_run(tmp_path / "run", [make_record(0, cosine=None)], epochs, steps_per_epoch=4)
    run = load_run(tmp_path / "run")
    (first, second) = run.epoch_entries()
    assert first == epochs[0]  # None stays None
    assert math.isnan(second["train_loss"]) and second["sharpness"] == math.inf  # NaN stays NaN
    assert run.step_records()[0].cosine is None
    assert math.isnan(run.epochs["train_loss"].iloc[1])  # the frame holds a float column


def test_metadata_records_provenance(tmp_path: Path) -> None:
    write_run(tmp_path / "run", [], [], steps_per_epoch=4)
    metadata = json.loads((tmp_path / "run" / METADATA_FILE).read_text())
    assert set(metadata["versions"]) == {"python", "torch", "numpy", "sgdwalk"}
    assert metadata["config_hash"] == WalkConfig(num_alphas=NUM_ALPHAS).result_hash
    assert metadata["seed"] == 1111 and "git_commit" in metadata and metadata["started"]
    assert (tmp_path / "run" / EPOCHS_FILE).exists()


# ------------------------------------------------------------------------ summary
def test_window_summaries_from_records() -> None:
    steps_per_epoch = 10
    window_1 = [make_record(0, height=0.2, cosine=None), make_record(1, height=0.4, cosine=-0.2, barrier=0.03)]
    window_3 = [make_record(20, height=0.1, cosine=None), make_record(21, height=0.1, cosine=0.4)]
    window_3.append(make_record(22, height=0.4, cosine=-0.4, barrier=0.01))
    history = [
        {"epoch": 1, "train_loss": 0.9, "val_accuracy": 0.5},
        {"epoch": 3, "train_loss": 0.3, "val_accuracy": 0.9},
    ]

    first, third = summarize_windows([r.as_dict() for r in window_1 + window_3], history, steps_per_epoch)

    assert (first.epoch, first.steps, first.barriers) == (1, 2, 1)
    assert first.height_mean == pytest.approx(0.3) and first.height_sd == pytest.approx(math.sqrt(0.02))
    assert first.max_barrier_height == 0.03
    assert first.cosine_mean == -0.2 and first.cosine_sd is None  # one cosine: no spread
    assert first.distance_end == pytest.approx(0.2)
    assert (first.train_loss, first.val_accuracy) == (0.9, 0.5)

    assert (third.epoch, third.steps, third.barriers, third.max_barrier_height) == (3, 3, 1, 0.01)
    assert third.cosine_mean == pytest.approx(0.0) and third.cosine_sd == pytest.approx(math.sqrt(0.16 * 2))
    assert third.interior_floor_fraction == 1.0


def test_window_summaries_accept_load_run_rows(tmp_path: Path) -> None:
    records = [make_record(0, cosine=None), make_record(1, cosine=0.5)]
    write_run(tmp_path / "run", records, [], steps_per_epoch=4)
    run = load_run(tmp_path / "run")
    (window,) = summarize_windows(rows_of(run.steps), rows_of(run.epochs), 4)
    assert window.cosine_mean == 0.5 and window.train_loss is None


def test_window_summaries_carry_the_measurement_error_and_the_barrier_tests(tmp_path: Path) -> None:
    records = [
        make_record(0, height=0.2, cosine=None, height_se=0.01, barrier_test="not crossed"),
        make_record(1, height=0.4, height_se=0.03, barrier_test="undecided"),
        make_record(2, height=0.3, height_se=0.02, barrier=0.05, barrier_test="crossed"),
    ]
    write_run(tmp_path / "run", records, [], steps_per_epoch=10)
    run = load_run(tmp_path / "run")
    assert run.step_records() == records  # the uncertainty fields survive the round trip
    for rows in ([r.as_dict() for r in records], rows_of(run.steps)):
        (window,) = summarize_windows(rows, [], 10)
        # Errors of steps that read the same samples are taken as perfectly correlated.
        assert window.height_se == pytest.approx(0.02)
        assert window.samples_mean == pytest.approx(501)
        assert (window.barriers_crossed, window.barriers_undecided) == (1, 1)
    table = render_table([window]).splitlines()
    assert "0.02" in table[2] and "1/1" in table[2]
    # Records made before the error bars summarise with None, and print "-".
    (old,) = summarize_windows([make_record(0).as_dict()], [], 10)
    assert old.height_se is None and old.barriers_crossed is None and old.samples_mean is None


def test_render_table_has_one_row_per_window() -> None:
    summaries = summarize_windows(
        [make_record(0).as_dict(), make_record(30).as_dict()], [{"epoch": 1, "val_accuracy": 0.875}], 10
    )
    table = render_table(summaries)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["epoch", "steps"]
    assert len(lines) == 4 and "87.5%" in lines[2] and lines[3].split()[0] == "4"
    assert render_table([]) == "(no measured steps)\n"


# ------------------------------------------------------------------------- the owner
def lock_is_free(run_dir: Path) -> bool:
    """Whether a new open file description can take the run's lock (flock locks conflict
    between descriptions even within one process)."""
    with open(run_dir / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def test_a_writer_owns_its_directory_from_create_to_close(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    writer = RunWriter.create(run_dir, WalkConfig(), {"status": "running"})
    assert not lock_is_free(run_dir)
    assert json.loads((run_dir / LOCK_FILE).read_text(encoding="utf-8"))["pid"] == os.getpid()
    writer.close()
    writer.close()  # a second close does nothing
    assert lock_is_free(run_dir)
    reopened = RunWriter.reopen(run_dir, steps_kept=0, epochs_kept=0)
    assert not lock_is_free(run_dir)
    reopened.close()
    assert lock_is_free(run_dir)


def test_a_refused_create_leaves_the_directory_free(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    RunWriter.create(run_dir, WalkConfig(), {}).close()
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        RunWriter.create(run_dir, WalkConfig(), {})
    assert lock_is_free(run_dir)


def test_holds_of_one_process_nest(tmp_path: Path) -> None:
    with hold_run_directory(tmp_path / "run"):
        with hold_run_directory(tmp_path / "run"):  # a sweep cell's hold, then its runner's
            assert not lock_is_free(tmp_path / "run")
        assert not lock_is_free(tmp_path / "run")
    assert lock_is_free(tmp_path / "run")


def test_a_run_written_before_the_newer_record_fields_still_loads(tmp_path: Path) -> None:
    """Fields added to ``StepRecord`` later (defaults None) are absent from older steps.jsonl lines."""
    records = [make_record(step) for step in range(3)]
    write_run(tmp_path / "run", records, [], steps_per_epoch=4)
    steps = tmp_path / "run" / "steps.jsonl"
    newer = ("group_lrs", "update_cosine")
    lines = [json.loads(line) for line in steps.read_text().splitlines()]
    steps.write_text("".join(json.dumps({k: v for k, v in line.items() if k not in newer}) + "\n" for line in lines))
    assert load_run(tmp_path / "run").step_records() == records


def test_plot_says_which_line_a_crash_cut(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sgdwalk.cli import main

    run_dir = tmp_path / "run"
    write_run(run_dir, [make_record(0), make_record(1)], [], steps_per_epoch=4)
    (run_dir / STEPS_FILE).write_text((run_dir / STEPS_FILE).read_text() + '{"step": 2, "lr": 0.')
    metadata_file = run_dir / METADATA_FILE
    metadata_file.write_text(json.dumps({**json.loads(metadata_file.read_text()), "status": "failed"}))
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "figures")]) == 0
    assert f"the last line of {run_dir / STEPS_FILE} was cut short by a crash" in capsys.readouterr().err
