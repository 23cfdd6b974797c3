"""The training runner on tiny synthetic data: what it measures, writes, resumes and reports.

Data come through the ``data=`` seam of ``run_walk`` (a ``WalkData`` of small tensors), so
these tests need no data files; the CLI tests cover the real loaders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from sgdwalk.instrument.geometry import flat_gradient
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.schedule import every_kth
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.runs.runlog import CHECKPOINT_FILE, STEPS_FILE, load_run
from sgdwalk.runs.runner import (
    WalkData,
    WalkResult,
    measurement_indices,
    resume_walk,
    run_walk,
    tracking_schedule,
)
from sgdwalk.training.config import WalkConfig
from sgdwalk.training.data import RandomCropFlip
from sgdwalk.training.models import build_model

IMAGE_SIZE = 4  # the smallest image every model accepts
NUM_CLASSES = 3
TRAIN_SIZE = 64
VAL_SIZE = 16
BATCH_SIZE = 16  # 4 steps per epoch
STEPS_PER_EPOCH = TRAIN_SIZE // BATCH_SIZE

# Two float32 computations of one gradient that differ only in summation order.
FLOAT32_GRADIENT_RTOL = 1e-5


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: these networks are tiny, and on a shared 2-core machine a second
    thread waiting at every barrier makes each op many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_data(seed: int = 0, augment: bool = False) -> WalkData:
    """Linearly separable classes of random 1×4×4 images: learnable in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(TRAIN_SIZE + VAL_SIZE, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    weights = torch.randn(IMAGE_SIZE * IMAGE_SIZE, NUM_CLASSES, generator=generator)
    targets = (inputs.flatten(1) @ weights).argmax(dim=1)
    return WalkData(
        inputs[:TRAIN_SIZE],
        targets[:TRAIN_SIZE],
        inputs[TRAIN_SIZE:],
        targets[TRAIN_SIZE:],
        in_channels=1,
        image_size=IMAGE_SIZE,
        num_classes=NUM_CLASSES,
        augmentation=RandomCropFlip(padding=1, fill=(0.0,)) if augment else None,
    )


def tiny_config(**changes: Any) -> WalkConfig:
    values: dict[str, Any] = dict(
        train_subset=None,
        batch_size=BATCH_SIZE,
        epochs=3,
        track_epochs=(1, 3),
        steps_per_window=None,
        measurement_size=32,
        num_alphas=4,
        width_multiplier=0.05,  # hidden widths 25 and 18
        device="cpu",
        progress=False,
    )
    values.update(changes)
    return WalkConfig(**values)


def without_timing(entries: Sequence[Mapping[Any, Any]]) -> list[dict[Any, Any]]:
    """History entries minus their wall time, with pandas' NaN for a missing value as None."""

    def plain(value: Any) -> Any:
        return None if isinstance(value, float) and math.isnan(value) else value

    return [{key: plain(value) for key, value in entry.items() if key != "seconds"} for entry in entries]


def all_finite(record: StepRecord) -> bool:
    numbers = [v for v in record.as_dict().values() if isinstance(v, float)]
    numbers += [*record.segment_losses, *record.segment_alphas]
    return all(math.isfinite(v) for v in numbers)


# ---------------------------------------------------------------------------- runs
def test_a_tiny_run_measures_the_tracked_steps_and_writes_its_records(tmp_path: Path) -> None:
    result = run_walk(tiny_config(out_dir=str(tmp_path / "run")), data=tiny_data())

    assert result.status == "finished" and result.divergence is None
    assert result.steps_per_epoch == STEPS_PER_EPOCH
    # epochs 1 and 3 of 4 steps each
    assert [r.step for r in result.records] == [0, 1, 2, 3, 8, 9, 10, 11]
    assert all(all_finite(r) for r in result.records)
    assert [r.lr for r in result.records] == [0.1] * 8
    assert [entry["epoch"] for entry in result.history] == [0, 1, 2, 3]
    assert result.history[0]["distance_from_init"] == 0.0  # epoch 0 is θ_0
    assert [w.epoch for w in result.windows] == [1, 3]
    assert [w.steps for w in result.windows] == [4, 4]

    run = load_run(tmp_path / "run")
    assert run.status == "finished" and run.step_records() == result.records
    assert without_timing(run.epochs.to_dict("records")) == without_timing(result.history)
    assert run.summary["windows"] == [w.as_dict() for w in result.windows]
    assert run.metadata["steps_per_epoch"] == STEPS_PER_EPOCH
    assert run.metadata["measurement_size"] == 32 and run.metadata["train_size"] == TRAIN_SIZE
    assert (tmp_path / "run" / CHECKPOINT_FILE).exists()


def test_a_run_without_out_dir_stays_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_walk(tiny_config(epochs=1, track_epochs=(1,)), data=tiny_data())
    assert result.run_dir is None and len(result.records) == STEPS_PER_EPOCH
    assert list(tmp_path.iterdir()) == []


def test_the_same_config_gives_the_same_records() -> None:
    config = tiny_config(epochs=1, track_epochs=(1,))
    assert run_walk(config, data=tiny_data()).records == run_walk(config, data=tiny_data()).records
    assert run_walk(config.replace(seed=7), data=tiny_data()).records != run_walk(config, data=tiny_data()).records


def test_records_are_on_disk_as_soon_as_they_are_made(tmp_path: Path) -> None:
    steps_file = tmp_path / "run" / STEPS_FILE
    seen: list[int] = []

    def check_file(record: StepRecord) -> None:
        lines = steps_file.read_text().splitlines()
        seen.append(record.step)
        assert len(lines) == len(seen), "each record is flushed before the next step"
        assert json.loads(lines[-1])["step"] == record.step

    run_walk(tiny_config(out_dir=str(tmp_path / "run")), data=tiny_data(), on_record=check_file)
    assert seen == [0, 1, 2, 3, 8, 9, 10, 11]


def test_steps_per_window_and_track_every_choose_the_measured_steps() -> None:
    result = run_walk(tiny_config(steps_per_window=2, track_every=5), data=tiny_data())
    # first 2 steps of epochs 1 (0, 1) and 3 (8, 9), plus every 5th step (0, 5, 10)
    assert [r.step for r in result.records] == [0, 1, 5, 8, 9, 10]
    assert [(w.epoch, w.steps) for w in result.windows] == [(1, 2), (2, 1), (3, 3)]


def test_the_lr_schedule_reaches_the_optimizer() -> None:
    config = tiny_config(lr_schedule="cyclical", lr_max=0.5, lr_step_epochs=0.5, epochs=1, track_epochs=(1,))
    result = run_walk(config, data=tiny_data())
    # half cycle of 2 steps: 0.1, 0.3, 0.5, 0.3
    assert [r.lr for r in result.records] == pytest.approx([0.1, 0.3, 0.5, 0.3], rel=1e-12)
    for record in result.records:  # no momentum, no noise: the step is lr times the gradient
        assert record.lr is not None
        assert record.step_length == pytest.approx(record.lr * record.grad_norm, rel=FLOAT32_GRADIENT_RTOL)


def test_gd_takes_the_exact_mean_gradient_over_the_training_set() -> None:
    data = tiny_data()
    config = tiny_config(optimizer="gd", epochs=1, track_epochs=(1,), weight_decay=0.0, gd_chunk_size=24)
    (record,) = run_walk(config, data=data).records
    assert record.step == 0

    # Independently: the same θ_0, one forward over the whole set in train mode. With
    # chunks of 24 the runner's batch-norm statistics are per chunk, so compare with the
    # same chunks weighted by their share of the set (the *mean*, not the authors' sum).
    torch.manual_seed(config.seed)
    model = build_model("mlp", 1, IMAGE_SIZE, NUM_CLASSES, config.width_multiplier)
    model.train()
    total = 0.0
    for start in range(0, TRAIN_SIZE, 24):
        losses = F.cross_entropy(
            model(data.train_inputs[start : start + 24]), data.train_targets[start : start + 24], reduction="none"
        )
        (losses.sum() / TRAIN_SIZE).backward()
        total += float(losses.detach().double().sum())
    expected_norm = float(torch.linalg.vector_norm(flat_gradient(model).double()))

    assert record.grad_norm == pytest.approx(expected_norm, rel=FLOAT32_GRADIENT_RTOL)
    assert record.minibatch_loss == pytest.approx(total / TRAIN_SIZE, rel=FLOAT32_GRADIENT_RTOL)
    assert record.step_length == pytest.approx(config.lr * expected_norm, rel=FLOAT32_GRADIENT_RTOL)


def test_noisy_gd_scales_its_noise_and_leaves_the_initial_network_alone() -> None:
    config = tiny_config(optimizer="noisy-gd", epochs=2, track_epochs=(1, 2), noise_batches=8)
    small, large = (run_walk(config.replace(noise_scale=c, out_dir=None), data=tiny_data()) for c in (0.02, 0.04))
    gd = run_walk(config.replace(optimizer="gd"), data=tiny_data())
    # the variance estimate is recorded only on disk; compare through the step lengths:
    # the same gradient plus noise of twice the variance moves farther.
    assert large.records[0].step_length > small.records[0].step_length > gd.records[0].step_length
    # the estimate restored batch norm's running statistics: the eval-mode loss at θ_0 agrees.
    assert small.history[0]["train_loss"] == gd.history[0]["train_loss"]


def test_noisy_gd_records_its_variance(tmp_path: Path) -> None:
    runs = {}
    for scale in (0.02, 0.04):
        config = tiny_config(optimizer="noisy-gd", epochs=1, track_epochs=(1,), noise_scale=scale, noise_batches=8)
        runs[scale] = run_walk(config.replace(out_dir=str(tmp_path / str(scale))), data=tiny_data()).metadata
    assert runs[0.02]["noise_batches"] == 8
    assert runs[0.04]["noise_variance"] == pytest.approx(2 * runs[0.02]["noise_variance"], rel=1e-12)


def test_sharpness_per_tracked_epoch_and_every_n_steps() -> None:
    config = tiny_config(sharpness_per_tracked_epoch=True, sharpness_every=2, measurement_size=16)
    result = run_walk(config, data=tiny_data())
    assert [entry["sharpness"] is not None for entry in result.history] == [False, True, False, True]
    assert [r.step for r in result.records if r.sharpness is not None] == [0, 2, 8, 10]


def test_cpu_threads_hold_for_the_run_only(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    config = tiny_config(epochs=1, track_epochs=(1,), cpu_threads=2, out_dir=str(tmp_path / "run"))
    result = run_walk(config, data=tiny_data())
    assert result.metadata["cpu_threads"] == 2
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------- divergence
def test_a_diverging_run_stops_cleanly_and_says_where(tmp_path: Path) -> None:
    result = run_walk(tiny_config(lr=1e12, out_dir=str(tmp_path / "run")), data=tiny_data())
    assert result.status == "diverged"
    # The loss passes 1000 times its start (divergence.py) a step before it stops being finite.
    assert result.divergence is not None and "epoch 1" in result.divergence
    assert "times its starting value" in result.divergence
    assert all(all_finite(r) for r in result.records)

    run = load_run(tmp_path / "run")
    assert run.status == "diverged" and run.metadata["divergence"] == result.divergence
    assert run.summary["divergence"] == result.divergence
    assert "NaN" not in (tmp_path / "run" / STEPS_FILE).read_text()


# -------------------------------------------------------------------------- resume
class Interrupt(Exception):
    """Stands for the process being killed in the middle of an epoch."""


def interrupted_then_resumed(config: WalkConfig, data: WalkData, stop_at_step: int) -> Path:
    def crash(record: StepRecord) -> None:
        if record.step == stop_at_step:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_walk(config, data=data, on_record=crash)
    assert config.out_dir is not None
    assert load_run(config.out_dir).status == "failed"
    result = resume_walk(config.out_dir, data=data)
    assert result.status == "finished"
    return Path(config.out_dir)


@pytest.mark.parametrize(
    ("changes", "stop_at_step"),
    [
        # SGD with augmentation; epoch 1's last segment is pending at the checkpoint (step 4
        # is measured too) together with its gradient; the crash comes in epoch 2.
        (dict(track_epochs=(1, 2), track_every=3, augment=True), 5),
        # GD plus noise: the noise generator's state crosses the checkpoint.
        # (A checkpoint every update: full-batch runs checkpoint every 100 by default.)
        (
            dict(
                optimizer="noisy-gd",
                epochs=4,
                track_epochs=(),
                track_every=1,
                noise_batches=4,
                checkpoint_every_updates=1,
            ),
            2,
        ),
    ],
    ids=["sgd-augmented", "noisy-gd"],
)
def test_resume_gives_the_records_of_an_uninterrupted_run(
    tmp_path: Path, changes: dict[str, Any], stop_at_step: int
) -> None:
    config = tiny_config(**changes)
    data = tiny_data(augment=True)
    whole = run_walk(config.replace(out_dir=str(tmp_path / "whole")), data=data)
    resumed_dir = interrupted_then_resumed(config.replace(out_dir=str(tmp_path / "resumed")), data, stop_at_step)

    assert (resumed_dir / STEPS_FILE).read_bytes() == (tmp_path / "whole" / STEPS_FILE).read_bytes()
    resumed = load_run(resumed_dir)
    assert resumed.step_records() == whole.records
    assert without_timing(resumed.epochs.to_dict("records")) == without_timing(whole.history)
    assert resumed.summary["windows"] == [w.as_dict() for w in whole.windows]
    assert resumed.metadata["resumed"][0]["after_epoch"] >= 1


def test_resume_without_a_checkpoint_starts_over(tmp_path: Path) -> None:
    config = tiny_config(out_dir=str(tmp_path / "run"), checkpoint_every_epochs=None)
    whole = run_walk(config.replace(out_dir=str(tmp_path / "whole")), data=tiny_data())
    run_dir = interrupted_then_resumed(config, tiny_data(), stop_at_step=2)
    assert not (run_dir / CHECKPOINT_FILE).exists()
    assert load_run(run_dir).step_records() == whole.records


def test_a_run_read_from_its_directory_is_the_result_the_run_returned(tmp_path: Path) -> None:
    config = tiny_config(out_dir=str(tmp_path / "run"), sharpness_per_tracked_epoch=True)
    returned = run_walk(config, data=tiny_data())
    read = WalkResult.from_run(load_run(tmp_path / "run"))
    assert read == returned  # records, history (None as None), windows, status, metadata, run_dir


def test_resuming_a_finished_run_returns_it_without_training(tmp_path: Path) -> None:
    config = tiny_config(out_dir=str(tmp_path / "run"))
    first = run_walk(config, data=tiny_data())
    steps_before = (tmp_path / "run" / STEPS_FILE).read_bytes()
    again = resume_walk(tmp_path / "run", data=tiny_data())
    assert again.status == "finished" and again.records == first.records
    assert (tmp_path / "run" / STEPS_FILE).read_bytes() == steps_before


def test_tracker_state_survives_a_weights_only_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = tiny_data()
    model = build_model("mlp", 1, IMAGE_SIZE, NUM_CLASSES, 0.05)
    measurement = MeasurementSet(data.train_inputs[:16], data.train_targets[:16])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def make_tracker() -> WalkTracker:
        return WalkTracker(model, measurement, schedule=every_kth(1), num_alphas=3)

    def step(tracker: WalkTracker, index: int) -> None:
        optimizer.zero_grad()
        batch = slice(index * 16, index * 16 + 16)
        loss = F.cross_entropy(model(data.train_inputs[batch]), data.train_targets[batch])
        loss.backward()
        with tracker.step(minibatch_loss=loss, lr=0.1):
            optimizer.step()

    tracker = make_tracker()
    step(tracker, 0)
    step(tracker, 1)  # step 1's segment is pending: step 2 is measured too
    torch.save({"tracker": tracker.state_dict(), "model": model.state_dict()}, tmp_path / "state.pt")
    step(tracker, 2)
    expected = tracker.close()

    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    model.load_state_dict(saved["model"])
    restored = make_tracker()
    restored.load_state_dict(saved["tracker"])
    step(restored, 2)
    assert restored.close() == expected
    assert [r.step for r in expected] == [0, 1, 2] and expected[2].cosine is not None
    assert expected[2].update_cosine is not None, "the previous update survived the checkpoint"


# --------------------------------------------------------------------- pure parts
def test_tracking_schedule_windows_and_every_kth() -> None:
    config = tiny_config(epochs=5, track_epochs=(1, 4), steps_per_window=3, track_every=7)
    schedule = tracking_schedule(config, steps_per_epoch=10)
    assert [step for step in range(50) if schedule(step)] == [0, 1, 2, 7, 14, 21, 28, 30, 31, 32, 35, 42, 49]


def test_measurement_indices_are_a_seeded_sorted_subset() -> None:
    chosen = measurement_indices(100, 10, seed=3)
    assert chosen.tolist() == sorted(set(chosen.tolist())) and len(chosen) == 10
    assert torch.equal(chosen, measurement_indices(100, 10, seed=3))
    assert not torch.equal(chosen, measurement_indices(100, 10, seed=4))
    assert torch.equal(measurement_indices(5, None, seed=3), torch.arange(5))


# ----------------------------------------------------------------------- cadences
def test_evaluation_every_n_updates_leaves_the_walk_alone_and_skips_the_evaluations_between() -> None:
    every_epoch = run_walk(tiny_config(epochs=6, track_epochs=(1, 6)), data=tiny_data())
    sparse = run_walk(tiny_config(epochs=6, track_epochs=(1, 6), evaluate_every_updates=8), data=tiny_data())

    assert sparse.records == every_epoch.records  # evaluation reads the model, never moves it
    evaluated = [entry["epoch"] for entry in sparse.history if entry["train_loss"] is not None]
    # 4 updates per epoch: the update count passes a multiple of 8 at epochs 2, 4 and 6;
    # epoch 0 (θ_0) and the last epoch are always evaluated.
    assert evaluated == [0, 2, 4, 6]
    assert [entry["epoch"] for entry in sparse.history] == list(range(7))  # every epoch keeps its entry
    by_epoch = {entry["epoch"]: entry for entry in every_epoch.history}
    for entry in sparse.history:
        assert entry["distance_from_init"] == by_epoch[entry["epoch"]]["distance_from_init"]
        if entry["train_loss"] is not None:
            assert entry["val_accuracy"] == by_epoch[entry["epoch"]]["val_accuracy"]


def test_full_batch_runs_evaluate_every_ten_updates_and_checkpoint_every_hundred_by_default() -> None:
    from sgdwalk.training.config import cadence

    gd = cadence(tiny_config(optimizer="gd", epochs=250, track_epochs=()), steps_per_epoch=1)
    assert [epoch for epoch in range(251) if gd.evaluates(epoch)] == [0, *range(10, 251, 10)]
    assert [epoch for epoch in range(1, 251) if gd.checkpoints(epoch)] == [100, 200]
    never = cadence(tiny_config(optimizer="gd", epochs=250, track_epochs=(), checkpoint_every_epochs=None), 1)
    assert not any(never.checkpoints(epoch) for epoch in range(1, 251))
    sgd = cadence(tiny_config(epochs=5, checkpoint_every_epochs=2), steps_per_epoch=4)
    assert all(sgd.evaluates(epoch) for epoch in range(6))
    assert [epoch for epoch in range(1, 6) if sgd.checkpoints(epoch)] == [2, 4]
    by_updates = cadence(tiny_config(epochs=5, checkpoint_every_updates=6), steps_per_epoch=4)
    # updates 4, 8, 12, 16, 20: multiples of 6 are passed in epochs 2 (8 > 6), 3 (12) and 5 (20 > 18).
    assert [epoch for epoch in range(1, 6) if by_updates.checkpoints(epoch)] == [2, 3, 5]


def test_a_full_batch_run_writes_its_checkpoints_at_the_update_cadence(tmp_path: Path) -> None:
    config = tiny_config(
        optimizer="gd", epochs=5, track_epochs=(), track_every=2, checkpoint_every_updates=3, out_dir=str(tmp_path)
    )
    result = run_walk(config, data=tiny_data())

    checkpoint = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert int(checkpoint["epoch"]) == 3  # one update per epoch: of updates 1-5, only 3 is a multiple of 3
    # Evaluated every 10 updates by default, and at the first and last epoch.
    assert [entry["epoch"] for entry in result.history if entry["train_loss"] is not None] == [0, 5]


def test_the_mlp_without_batch_norm_and_with_tanh_trains_from_the_config() -> None:
    result = run_walk(tiny_config(batch_norm=False, activation="tanh"), data=tiny_data())
    protocol = run_walk(tiny_config(), data=tiny_data())

    assert result.status == "finished" and all(all_finite(r) for r in result.records)
    assert result.records != protocol.records


# -------------------------------------------------------------------------- memory
@pytest.mark.parametrize("to_disk", [False, True])
def test_a_finished_run_frees_its_model_without_the_cycle_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, to_disk: bool
) -> None:
    """A run's tensors are freed by reference counting when it returns: a reference cycle
    through the run would keep every finished run's model (and its GPU memory) alive until a
    full collection, which a sweep of many runs may not reach in time."""
    import gc
    import weakref

    from sgdwalk.runs import runner

    built: list[weakref.ref[torch.nn.Module]] = []
    build = runner.build_seeded_model

    def build_and_watch(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = build(*args, **kwargs)
        built.append(weakref.ref(model))
        return model

    config = tiny_config(epochs=1, track_epochs=(1,))
    # A first run imports what torch imports lazily (torch.optim's first optimizer imports
    # torch._dynamo, whose import frames stay referenced): only the second run is watched.
    run_walk(config, data=tiny_data())
    monkeypatch.setattr(runner, "build_seeded_model", build_and_watch)
    out_dir = str(tmp_path / "run") if to_disk else None
    gc.collect()
    gc.disable()
    try:
        result = run_walk(config.replace(out_dir=out_dir), data=tiny_data())
        (model,) = built
        assert result.records, "the run measured nothing"
        assert model() is None, "the finished run's model is still referenced (a reference cycle?)"
    finally:
        gc.enable()
