"""``LightningWalkCallback`` under a real ``lightning.Trainer`` on the CPU: the records equal,
bitwise, those of the same module trained by a plain loop with the same seed.

Bitwise, not to a tolerance: on one CPU device Lightning's automatic optimization does what
the plain loop does (forward, mean cross-entropy, backward, ``SGD.step``) in the same order
on the same batches, and the tracker reads the same parameters and gradients at the same
moments. The module has no dropout, so Lightning's own draws from torch's random stream (a
data loader's seed per epoch) cannot move the training.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.schedule import windows
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.integrations.metrics import flat_metrics
from tests.helpers import FLOAT32_VECTOR_VS_FLOAT64, assert_close, classification_data
from tests.integration_helpers import optional_library

if TYPE_CHECKING:
    import lightning
else:
    lightning = optional_library("lightning", "lightning")

# The one warning Lightning 2.6 raises here: its combined loader builds torch's pytree
# LeafSpec, which torch 2.14 deprecates. Inside Lightning; nothing this test or sgdwalk calls.
# Slow: Lightning round trips (importing Lightning alone takes seconds; conftest.py leaves this
# module uncollected without --runslow).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"),
]

TRAIN_SIZE, MEASURE_SIZE, BATCH, EPOCHS = 48, 32, 8, 2
LR, MOMENTUM, WEIGHT_DECAY = 0.3, 0.9, 0.01
STEPS = EPOCHS * TRAIN_SIZE // BATCH
# Below every step's gradient norm (0.3 to 0.9 here) and inside its largest entries: both clips bite.
CLIP = 0.1
# Across the epoch boundary (step 6), with unmeasured steps between the windows.
SCHEDULE = [(0, 3), (5, 8), (10, 12)]
TRACKER_OPTIONS: dict[str, Any] = {"num_alphas": 4, "weight_decay": WEIGHT_DECAY, "sharpness_every": 5}


class Classifier(lightning.LightningModule):
    """A two-layer tanh classifier trained with SGD on mean cross-entropy."""

    def __init__(self, seed: int, lr: float = LR) -> None:
        super().__init__()
        self.lr = lr
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(self(inputs), targets)

    def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
        return self.loss(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def data() -> tuple[DataLoader[tuple[torch.Tensor, ...]], MeasurementSet]:
    inputs, targets = classification_data(0, TRAIN_SIZE)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=BATCH, shuffle=False)
    return loader, MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE], chunk_size=16)


def clipped_by_hand(gradient: torch.Tensor, algorithm: str | None) -> torch.Tensor:
    """The gradient after Lightning's clipping, in float64: ``clip_grad_norm_``'s scale
    min(1, CLIP / (‖g‖ + 1e-6)), or each entry clamped to ±CLIP."""
    if algorithm == "norm":
        return gradient * min(1.0, CLIP / (float(gradient.norm()) + 1e-6))
    if algorithm == "value":
        return gradient.clamp(-CLIP, CLIP)
    return gradient


def plain_loop(seed: int, clip: str | None = None) -> tuple[Classifier, list[StepRecord]]:
    """The walk trained by hand; ``clip`` ("norm", "value"), as Lightning's ``gradient_clip_algorithm``."""
    module = Classifier(seed)
    loader, measurement = data()
    optimizer = module.configure_optimizers()
    tracker = WalkTracker(module, measurement, schedule=windows(SCHEDULE), **TRACKER_OPTIONS)
    module.train()
    for _ in range(EPOCHS):
        for batch in loader:
            optimizer.zero_grad()
            loss = module.loss(batch)
            loss.backward()
            if clip == "norm":
                torch.nn.utils.clip_grad_norm_(module.parameters(), CLIP)
            elif clip == "value":
                torch.nn.utils.clip_grad_value_(module.parameters(), CLIP)
            with tracker.step(minibatch_loss=loss, lr=optimizer.param_groups[0]["lr"]):
                optimizer.step()
    return module, tracker.close()


def hand_gradient_norms(seed: int, clip: str | None) -> dict[int, float]:
    """‖clipped g_t + wd·θ_t‖ at every step, from float64 copies of the raw gradient and θ_t."""
    module = Classifier(seed)
    loader, _ = data()
    optimizer = module.configure_optimizers()
    norms: dict[int, float] = {}
    for batch in [batch for _ in range(EPOCHS) for batch in loader]:
        optimizer.zero_grad()
        module.loss(batch).backward()
        raw = torch.cat([p.grad.double().reshape(-1) for p in module.parameters() if p.grad is not None])
        theta = torch.cat([p.detach().double().reshape(-1) for p in module.parameters()])
        used = clipped_by_hand(raw, clip)
        norms[len(norms)] = float((used + WEIGHT_DECAY * theta).norm())
        assert clip is None or not torch.equal(used, raw), f"step {len(norms) - 1}: the {clip} clip did not bite"
        # Step with the gradient Lightning's clip leaves, so the next θ is the clipped walk's.
        offset = 0
        for parameter in module.parameters():
            size = parameter.numel()
            parameter.grad = used[offset : offset + size].reshape(parameter.shape).to(parameter.dtype)
            offset += size
        optimizer.step()
    return norms


def trainer(**options: Any) -> lightning.Trainer:
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": EPOCHS,
        "enable_checkpointing": False,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **options,
    }
    return lightning.Trainer(**settings)


def lightning_fit(seed: int, **trainer_options: Any) -> tuple[Classifier, list[StepRecord]]:
    from sgdwalk.integrations.lightning_callback import LightningWalkCallback

    module = Classifier(seed)
    loader, measurement = data()
    callback = LightningWalkCallback(measurement, schedule=windows(SCHEDULE), **TRACKER_OPTIONS)
    trainer(callbacks=[callback], **trainer_options).fit(module, loader)
    assert callback.tracker is not None
    return module, callback.tracker.close()


@pytest.fixture(scope="module")
def plain() -> tuple[Classifier, list[StepRecord]]:
    return plain_loop(seed=0)


def test_lightning_records_equal_the_plain_loops_bitwise(plain: tuple[Classifier, list[StepRecord]]) -> None:
    plain_module, expected = plain
    module, actual = lightning_fit(seed=0)
    assert [r.step for r in expected] == [0, 1, 2, 5, 6, 7, 10, 11]
    assert sum(r.sharpness is not None for r in expected) == 3  # steps 0, 5, 10
    assert actual == expected  # dataclass equality: every float compared with ==
    for name, value in plain_module.state_dict().items():
        assert torch.equal(module.state_dict()[name], value), f"{name}: Lightning trained another model"


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_records_hold_the_gradient_lightning_clipped(algorithm: str) -> None:
    """``gradient_clip_val`` clips after ``on_before_optimizer_step``: the records hold the
    clipped gradient the update used, as the plain loop that clips by hand does."""
    _, expected = plain_loop(seed=0, clip=algorithm)
    _, actual = lightning_fit(seed=0, gradient_clip_val=CLIP, gradient_clip_algorithm=algorithm)
    assert actual == expected
    hand = hand_gradient_norms(seed=0, clip=algorithm)
    assert_close([r.grad_norm for r in actual], [hand[r.step] for r in actual], FLOAT32_VECTOR_VS_FLOAT64, "grad_norm")


def test_records_reach_the_trainers_logger(plain: tuple[Classifier, list[StepRecord]], tmp_path: Path) -> None:
    """Lightning's own CSVLogger, read back with the csv module: each record's metrics at its step."""
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="walk", version=0)
    lightning_fit(seed=0, logger=logger, log_every_n_steps=1)
    with (tmp_path / "walk" / "version_0" / "metrics.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("sgdwalk/loss_start")]
    _, expected = plain
    assert [int(row["step"]) for row in rows] == [r.step for r in expected]
    for row, record in zip(rows, expected, strict=True):
        logged = {name: float(text) for name, text in row.items() if name.startswith("sgdwalk/") and text}
        assert logged == flat_metrics(record, "sgdwalk/")


def test_a_diverged_walk_stops_the_trainer() -> None:
    from sgdwalk.integrations.lightning_callback import LightningWalkCallback

    loader, measurement = data()
    callback = LightningWalkCallback(measurement, **TRACKER_OPTIONS)
    fit = trainer(callbacks=[callback])
    # A learning rate no network survives: the parameters overflow within a few steps.
    fit.fit(Classifier(seed=0, lr=1e30), loader)
    assert callback.tracker is not None and callback.tracker.diverged
    assert fit.global_step < STEPS, "the trainer went on after the walk diverged"
    assert all(math.isfinite(r.loss_end) for r in callback.tracker.close())


def resumed_fit(
    checkpoint: Path, callback: Any | None = None, module: Classifier | None = None
) -> tuple[Classifier, list[StepRecord]]:
    """A fit from ``checkpoint`` to the end, with ``callback`` and ``module`` (default: new
    ones, as a new process makes; the module with other weights, which the checkpoint's replace)."""
    from sgdwalk.integrations.lightning_callback import LightningWalkCallback

    module = Classifier(seed=1) if module is None else module
    loader, measurement = data()
    if callback is None:
        callback = LightningWalkCallback(measurement, schedule=windows(SCHEDULE), **TRACKER_OPTIONS)
    trainer(callbacks=[callback]).fit(module, loader, ckpt_path=checkpoint)
    assert callback.tracker is not None
    return module, callback.tracker.close()


def test_a_fit_resumed_from_a_checkpoint_continues_the_walk(
    plain: tuple[Classifier, list[StepRecord]], tmp_path: Path
) -> None:
    """Stopped at step 6 (an epoch's end, inside the window 5-7) and resumed by a new callback,
    as a new process would: the records are the uninterrupted run's, bitwise, numbered and
    measured from θ_0 as it numbers them, the checkpoint's records included (before, a new walk
    began at step 0 from the checkpoint's weights, without a word)."""
    from sgdwalk.integrations.lightning_callback import LightningWalkCallback

    loader, measurement = data()
    first = LightningWalkCallback(measurement, schedule=windows(SCHEDULE), **TRACKER_OPTIONS)
    stopped = trainer(callbacks=[first], max_steps=STEPS // EPOCHS)
    stopped.fit(Classifier(seed=0), loader)
    stopped.save_checkpoint(tmp_path / "step6.ckpt")
    module, records = resumed_fit(tmp_path / "step6.ckpt")
    plain_module, expected = plain
    assert records == expected
    for name, value in plain_module.state_dict().items():
        assert torch.equal(module.state_dict()[name], value), f"{name}: the resumed fit trained another model"


def test_the_same_callback_resumed_from_an_earlier_checkpoint_goes_back_to_it(
    plain: tuple[Classifier, list[StepRecord]], tmp_path: Path
) -> None:
    """A fit that ran on to step 9 after its checkpoint at step 6, resumed from that checkpoint
    with the same callback (a crash after the last checkpoint, in a notebook): the replayed steps
    carry their own numbers and values (before: numbered from 9 on, with step 6's values), and
    the sinks are told that they get steps 6-8 again."""
    from sgdwalk.integrations.lightning_callback import LightningWalkCallback

    checkpoint = tmp_path / "step6.ckpt"

    class SaveAtStep6(lightning.Callback):
        def on_train_batch_end(self, trainer: lightning.Trainer, *args: Any) -> None:
            if trainer.global_step == STEPS // EPOCHS:
                trainer.save_checkpoint(checkpoint)

    loader, measurement = data()
    callback = LightningWalkCallback(measurement, schedule=windows(SCHEDULE), **TRACKER_OPTIONS)
    module = Classifier(seed=0)
    trainer(callbacks=[callback, SaveAtStep6()], max_steps=9).fit(module, loader)
    with pytest.warns(UserWarning, match="goes back from step 9 to the checkpoint's step 6"):
        _, records = resumed_fit(checkpoint, callback, module)
    _, expected = plain
    assert records == expected


def test_a_checkpoint_without_a_walk_begins_one_at_its_step(tmp_path: Path) -> None:
    """A checkpoint saved without the callback (a warm start): the walk begins at its global
    step, distance_from_init counted from its weights."""
    loader, _ = data()
    stopped = trainer(max_steps=STEPS // EPOCHS)
    stopped.fit(Classifier(seed=0), loader)
    stopped.save_checkpoint(tmp_path / "step6.ckpt")
    _, records = resumed_fit(tmp_path / "step6.ckpt")
    assert [r.step for r in records] == [6, 7, 10, 11]
    assert records[0].cosine is None  # nothing before the walk's first step
    assert math.isclose(records[0].distance_from_init, records[0].step_length, rel_tol=1e-6)
