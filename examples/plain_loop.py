"""sgdwalk in a plain PyTorch loop: ``with tracker.step(...)`` around ``optimizer.step()``.

    python examples/plain_loop.py        # a few seconds on a CPU, synthetic data

Each tracked step records the loss along the update θ_t → θ_{t+1} on a fixed measurement
set, its valley floor, the height of θ_{t+1} above the floor, barriers and the cosine of
consecutive gradients (docs/definitions.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from synthetic import EPOCHS, LR, MEASUREMENT_SIZE, TRACKED_STEPS, batches, network, print_records, teacher_data

import sgdwalk


def main() -> list[sgdwalk.StepRecord]:
    inputs, targets = teacher_data()
    model = network()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    # Fixed and without augmentation: every step's losses are measured on the same samples.
    measurement = sgdwalk.MeasurementSet(inputs[:MEASUREMENT_SIZE], targets[:MEASUREMENT_SIZE])
    tracker = sgdwalk.WalkTracker(model, measurement, schedule=sgdwalk.windows(TRACKED_STEPS))
    for _ in range(EPOCHS):
        for x, y in batches(inputs, targets):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            with tracker.step(minibatch_loss=loss, lr=optimizer.param_groups[0]["lr"]):
                optimizer.step()
            if tracker.diverged:
                break
    records = tracker.close()
    print_records(records)
    return records


if __name__ == "__main__":
    main()
