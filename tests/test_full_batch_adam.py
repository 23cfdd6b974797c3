"""Full-batch Adam in the runner (``--optimizer full-batch-adam``, X3's runs): torch's Adam on
the exact full-batch gradient, its preconditioned sharpness recorded on its schedule with the
stability threshold, the same records after a resume, and the setting refused where no
optimizer has a preconditioner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sgdwalk.cli import main
from sgdwalk.cli.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.preconditioned_sharpness import adam_stability_threshold
from sgdwalk.runs.builders import ADAM_BETAS, ADAM_EPS
from sgdwalk.runs.runlog import load_run
from sgdwalk.runs.runner import run_walk
from sgdwalk.training.config import ConfigError, WalkConfig
from sgdwalk.training.models import build_model
from tests.test_runner import IMAGE_SIZE, NUM_CLASSES, TRAIN_SIZE, tiny_config, tiny_data
from tests.test_sinks_resume import stop_at_the_end_of_epoch_2

pytestmark = pytest.mark.usefixtures("one_thread")

# Two float32 computations of one step that differ only in summation order (the runner sums
# the full-batch gradient chunk by chunk, the reference in one pass).
FLOAT32_STEP_RTOL = 1e-5
LR = 0.01


def adam_config(**changes: object) -> WalkConfig:
    values: dict[str, object] = dict(
        optimizer="full-batch-adam",
        lr=LR,
        weight_decay=0.0,
        batch_norm=False,
        activation="tanh",
        epochs=4,
        track_epochs=(),
        track_steps=((0, 4),),
        gd_chunk_size=TRAIN_SIZE,
    )
    values.update(changes)
    return tiny_config(**values)


def test_full_batch_adam_is_torch_adam_on_the_exact_mean_gradient() -> None:
    data = tiny_data()
    config = adam_config()
    records = run_walk(config, data=data).records
    # Independently: the same θ_0, torch's Adam with the named betas and eps, each step on
    # the mean cross-entropy over the whole training set in one pass.
    torch.manual_seed(config.seed)
    model = build_model("mlp", 1, IMAGE_SIZE, NUM_CLASSES, config.width_multiplier, batch_norm=False, activation="tanh")
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=ADAM_BETAS, eps=ADAM_EPS)
    lengths = []
    for _ in range(config.epochs):
        before = flat_parameters(model).double()
        optimizer.zero_grad()
        F.cross_entropy(model(data.train_inputs), data.train_targets).backward()
        optimizer.step()
        lengths.append(float(torch.linalg.vector_norm(flat_parameters(model).double() - before)))
    assert [r.step for r in records] == [0, 1, 2, 3]
    assert [r.step_length for r in records] == pytest.approx(lengths, rel=FLOAT32_STEP_RTOL)
    # Adam's first step moves every coordinate with a gradient by about lr: not lr × |g|.
    assert records[0].lr == LR and records[0].step_length != pytest.approx(LR * records[0].grad_norm, rel=0.1)


def test_the_preconditioned_sharpness_is_recorded_on_its_schedule_with_its_threshold() -> None:
    records = run_walk(adam_config(preconditioned_sharpness_every=2), data=tiny_data()).records
    measured = [r.step for r in records if r.preconditioned_sharpness is not None]
    assert measured == [0, 2]
    threshold = adam_stability_threshold(LR, ADAM_BETAS[0])
    assert threshold == pytest.approx(38 / LR)
    for record in records:
        assert (record.stability_threshold == threshold) == (record.step in measured)
        assert record.preconditioned_sharpness is None or record.preconditioned_sharpness > 0


def test_the_preconditioned_sharpness_needs_an_adaptive_optimizer() -> None:
    for optimizer in ("sgd", "gd", "noisy-gd"):
        with pytest.raises(ConfigError, match="preconditioned_sharpness_every reads an adaptive optimizer"):
            WalkConfig(optimizer=optimizer, preconditioned_sharpness_every=2)


ADAM_WALK = [
    "--optimizer", "full-batch-adam", "--lr", "0.01", "--weight-decay", "0", "--no-batch-norm", "--activation",
    "tanh", "--epochs", "3", "--track-epochs", "1,2,3", "--steps-per-window", "0", "--measurement-size", "16",
    "--train-subset", "0", "--width-multiplier", "0.05", "--preconditioned-sharpness-every", "1",
    "--checkpoint-every-updates", "1", "--no-figures", "--device", "cpu", "--no-progress",
]  # fmt: skip


def test_a_resumed_adam_walk_writes_the_records_of_an_uninterrupted_one(fashion_root: Path, tmp_path: Path) -> None:
    flags = [*ADAM_WALK, "--data-root", str(fashion_root)]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert main(["walk", *flags, "--out", str(whole)]) == EXIT_OK
    with pytest.MonkeyPatch.context() as patch:
        stop_at_the_end_of_epoch_2(patch)
        assert main(["walk", *flags, "--out", str(stopped)]) == EXIT_INTERRUPTED
    assert main(["walk", "--resume", str(stopped), "--no-progress", "--no-figures"]) == EXIT_OK
    # Adam's moments come back from the checkpoint: without them the steps after it differ.
    assert (stopped / "steps.jsonl").read_bytes() == (whole / "steps.jsonl").read_bytes()
    records = load_run(whole).step_records()
    assert [r.step for r in records] == [0, 1, 2]
    assert all(r.preconditioned_sharpness is not None for r in records)


def test_walk_refuses_the_preconditioned_sharpness_of_sgd_before_training(
    fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--preconditioned-sharpness-every", "2", "--data-root", str(fashion_root), "--no-progress"]
    assert main(["walk", *flags, "--out", str(tmp_path / "run")]) == EXIT_USAGE
    assert "reads an adaptive optimizer's preconditioner" in capsys.readouterr().err
