"""sgdwalk attached to an optimizer in one line: the loop itself stays as it was.

    python examples/attach.py [OUT_DIR]   # a few seconds on a CPU; OUT_DIR/walk.csv (default: a temporary folder)

``tracker.attach(optimizer)`` measures every ``optimizer.step()`` through torch's step
hooks; the learning rate comes from the optimizer, the minibatch loss from
``tracker.note_loss(loss)`` (optional). The records are those of ``examples/plain_loop.py``
(same network, seed and batches), here also written as they come to a CSV file by a sink;
``sgdwalk.TensorBoardSink(DIR)`` and ``sgdwalk.MlflowSink(URI)`` plug in the same way.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from synthetic import EPOCHS, LR, MEASUREMENT_SIZE, TRACKED_STEPS, batches, network, print_records, teacher_data

import sgdwalk


def main(out_dir: Path) -> list[sgdwalk.StepRecord]:
    inputs, targets = teacher_data()
    model = network()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    measurement = sgdwalk.MeasurementSet(inputs[:MEASUREMENT_SIZE], targets[:MEASUREMENT_SIZE])
    csv_sink = sgdwalk.CsvSink(out_dir / "walk.csv")
    tracker = sgdwalk.WalkTracker(model, measurement, schedule=sgdwalk.windows(TRACKED_STEPS), sinks=[csv_sink])

    tracker.attach(optimizer)  # the one line

    for _ in range(EPOCHS):
        for x, y in batches(inputs, targets):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            tracker.note_loss(loss)  # optional: the minibatch loss in the records
            optimizer.step()
    records = tracker.close()
    csv_sink.close()
    print_records(records)
    print(f"records as CSV: {csv_sink.path}")
    return records


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as folder:
            main(Path(folder))
