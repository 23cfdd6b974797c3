"""sgdwalk in a Lightning ``Trainer``: one callback (needs ``pip install 'sgdwalk[lightning]'``).

    python examples/lightning_callback.py   # a few seconds on a CPU

``LightningWalkCallback`` builds the tracker when training starts and measures every
optimizer step; with a logger (``Trainer(logger=TensorBoardLogger(...))``) each record's
numbers also go to it. The records are those of ``examples/plain_loop.py`` (same network,
seed and batches), bitwise: tests/test_lightning.py checks it.
"""

from __future__ import annotations

import lightning
import torch
import torch.nn.functional as F
from synthetic import BATCH_SIZE, EPOCHS, LR, MEASUREMENT_SIZE, TRACKED_STEPS, network, print_records, teacher_data
from torch.utils.data import DataLoader, TensorDataset

import sgdwalk


class Classifier(lightning.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = network()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=LR)


def main() -> list[sgdwalk.StepRecord]:
    inputs, targets = teacher_data()
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=BATCH_SIZE, shuffle=False)
    measurement = sgdwalk.MeasurementSet(inputs[:MEASUREMENT_SIZE], targets[:MEASUREMENT_SIZE])
    callback = sgdwalk.LightningWalkCallback(measurement, schedule=sgdwalk.windows(TRACKED_STEPS))
    trainer = lightning.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Classifier(), loader)
    assert callback.tracker is not None
    records = callback.tracker.close()
    print_records(records)
    return records


if __name__ == "__main__":
    main()
