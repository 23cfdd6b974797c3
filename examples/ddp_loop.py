"""A DistributedDataParallel training loop measured by sgdwalk, launched by torchrun.

    torchrun --standalone --nproc-per-node 2 examples/ddp_loop.py --out records.jsonl

Every process trains the same DDP model on its equal slice of each global minibatch and
holds the whole measurement set; the tracker, made with the same arguments on every
process, evaluates each process's share of the set and combines them, so every process gets
the same records. Only process 0 calls the tracker's sinks: it alone writes ``--out``.

The data is synthetic (a teacher network's labels on Gaussian inputs), so the example needs
no download; replace ``make_data`` and ``Student`` with your own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sgdwalk import MeasurementSet, StepRecord, WalkTracker

FEATURES, CLASSES = 20, 4


def make_data(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian inputs labelled by a fixed random linear teacher (the same on every process)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(count, FEATURES, generator=generator)
    teacher = torch.randn(FEATURES, CLASSES, generator=torch.Generator().manual_seed(0))
    return inputs, (inputs @ teacher).argmax(dim=1)


class Student(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Linear(FEATURES, 32), nn.Tanh(), nn.Linear(32, CLASSES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file of the records (process 0 writes it)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="the global minibatch, split over the processes")
    args = parser.parse_args()

    dist.init_process_group("gloo")  # torchrun's environment says where the others are
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must split evenly over {world} processes")
    torch.manual_seed(0)  # the same initial network on every process
    model = DistributedDataParallel(Student())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_inputs, train_targets = make_data(args.steps * args.batch_size, seed=1)

    # The whole set on every process; its 8 chunks of 64 are dealt out round-robin.
    measurement = MeasurementSet(*make_data(512, seed=2), chunk_size=64)
    args.out.unlink(missing_ok=True)

    def write(record: StepRecord) -> None:
        with args.out.open("a") as file:
            file.write(json.dumps(record.as_dict()) + "\n")

    # The tracker measures model.module (DDP's gradient reduction and buffer broadcast are
    # left out of its measurements); the gradient it reads after backward is DDP's average
    # over the processes, the global minibatch's.
    tracker = WalkTracker(model, measurement, sharpness_every=10, sinks=[write])
    share = args.batch_size // world
    for step in range(args.steps):
        start = step * args.batch_size + rank * share
        optimizer.zero_grad()
        loss = F.cross_entropy(model(train_inputs[start : start + share]), train_targets[start : start + share])
        loss.backward()
        with tracker.step(minibatch_loss=loss, lr=0.5):  # records hold the mean of the processes' losses
            optimizer.step()
    records = tracker.close()
    if rank == 0:
        floors = sum(record.interior_floor for record in records)
        print(
            f"{len(records)} records in {args.out}: {floors} interior floors; sharpness at step 0 {records[0].sharpness:.3f}"
        )
    dist.barrier()  # no process tears its connections down while another still uses them
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
