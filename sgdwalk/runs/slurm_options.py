"""The resources of a sweep's Slurm array jobs, apart from the sweep itself so that
``sgdwalk sweep --help`` can show their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each array job (one cell per job)."""

    partition: str | None = None
    # Four hours: smoke-sized cells take minutes; a paper-sized cell needs more (and resumes
    # from its last epoch checkpoint when a rerun resubmits it after a time-out).
    time_min: int = 240
    # One run uses one device; several GPUs per job would sit idle.
    gpus_per_node: int = 1
    # Data live on the GPU; the CPU only launches kernels and writes records.
    cpus_per_task: int = 4
    # CIFAR-10's 45k images are 0.55 GB before they are copied to the device; torch and the
    # CUDA context take a few GB more.
    mem_gb: float = 16.0
    # At most this many cells at once, so that a sweep does not take a whole partition.
    array_parallelism: int = 16


__all__ = ["SlurmOptions"]
