"""A run under ``torchrun``: the process group, what may be distributed, each rank's device,
and one run directory for all ranks (see ``sgdwalk.runs.runner``'s docstring)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from sgdwalk.instrument.distributed import Shard
from sgdwalk.runs.builders import resolve_device
from sgdwalk.runs.launch import launched_by_torchrun
from sgdwalk.training.config import ConfigError, WalkConfig, is_full_batch


@contextmanager
def torchrun_process_group(device_name: str) -> Iterator[Shard]:
    """The default process group for a ``torchrun`` launch (gloo on the CPU, NCCL on CUDA,
    each rank on its ``LOCAL_RANK`` GPU), destroyed afterwards; this process alone otherwise."""
    import torch.distributed as dist

    if not launched_by_torchrun() or dist.is_initialized():
        yield Shard.current()
        return
    cuda = resolve_device(device_name).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield Shard.current()
        # gloo aborts a process whose peer tears its connections down first ("terminate
        # called without an active exception"): a rank that finished waits for the others.
        # (After an error there is no waiting: torchrun stops the other ranks.)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def check_distributable(config: WalkConfig, shard: Shard) -> None:
    if not shard.distributed:
        return
    if is_full_batch(config):
        raise ConfigError(
            f"optimizer {config.optimizer!r} under torchrun: only 'sgd' trains with DistributedDataParallel"
        )
    if config.batch_size % shard.world_size:
        raise ConfigError(
            f"batch_size {config.batch_size} does not split evenly over {shard.world_size} processes: "
            "each trains on an equal share of the global minibatch"
        )


def rank_device(device: torch.device, shard: Shard) -> torch.device:
    """Each rank's own GPU under torchrun (``torchrun_process_group`` set it current)."""
    if shard.distributed and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def same_out_dir(config: WalkConfig) -> WalkConfig:
    """Process 0's run directory on every process (each picked its own from the clock)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return config
    chosen = [config.out_dir]
    dist.broadcast_object_list(chosen, src=0)
    return config.replace(out_dir=chosen[0])
