"""The data and network the examples share: nothing downloaded, a few seconds on a CPU.

A teacher-labelled Gaussian classification task (a fixed random linear map picks each
label, so a network can learn it) and a small MLP. The examples train the same network
from the same seed on the same batches, so their records are the same walk.
"""

from __future__ import annotations

import torch
from torch import nn

FEATURES, CLASSES, TRAIN_SIZE, BATCH_SIZE = 20, 5, 1_000, 50
SEED, LR, EPOCHS = 0, 0.5, 3
# The walk's first 20 updates and 20 late ones (of 60), on a fixed set of 500 training samples.
TRACKED_STEPS = [(0, 20), (40, 60)]
MEASUREMENT_SIZE = 500


def teacher_data(seed: int = SEED) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(TRAIN_SIZE, FEATURES, generator=generator)
    teacher = torch.randn(FEATURES, CLASSES, generator=generator)
    return inputs, (inputs @ teacher).argmax(dim=1)


def network(seed: int = SEED) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))


def batches(inputs: torch.Tensor, targets: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's minibatches in a fixed order (the examples must see the same ones)."""
    return [(inputs[i : i + BATCH_SIZE], targets[i : i + BATCH_SIZE]) for i in range(0, TRAIN_SIZE, BATCH_SIZE)]


def print_records(records: list) -> None:
    print(
        f"{'step':>4} {'lr':>6} {'minibatch':>9} {'loss θ_t':>9} {'floor':>9} {'height':>8} {'barrier':>7} {'cosine':>7}"
    )
    for r in records:
        cosine = "-" if r.cosine is None else f"{r.cosine:7.3f}"
        print(
            f"{r.step:4d} {r.lr:6.3f} {r.minibatch_loss:9.4f} {r.loss_start:9.4f} {r.floor:9.4f} "
            f"{r.height_start:8.5f} {r.barrier!s:>7} {cosine:>7}"
        )
