"""The resources of a sweep's Slurm array jobs, apart from the sweep itself so that
``sgdwalk sweep --help`` can show their defaults without importing torch.

Each field is declared once (``sgdwalk.base.settings``): the ``--partition`` … ``--array-parallelism``
flags of ``sgdwalk sweep`` and the checks of the values are made from the declarations.
"""

from __future__ import annotations

from dataclasses import dataclass

from sgdwalk.base.errors import SgdwalkError
from sgdwalk.base.settings import first_problem, setting


class SlurmOptionsError(SgdwalkError, ValueError):
    """A resource a Slurm job cannot be given (the message names it)."""


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each array job (one cell per job)."""

    partition: str | None = setting(None, "Slurm partition", metavar="PARTITION", shown_default="the cluster's")
    # Four hours: smoke-sized cells take minutes; a paper-sized cell needs more (and resumes
    # from its last epoch checkpoint when a rerun resubmits it after a time-out).
    time_min: int = setting(240, "time limit of each job in minutes", metavar="MIN", positive=True)
    # One run uses one device; several GPUs per job would sit idle.
    gpus_per_node: int = setting(1, "GPUs per job", metavar="N", at_least=0)
    # Data live on the GPU; the CPU only launches kernels and writes records.
    cpus_per_task: int = setting(4, "CPUs per job", metavar="N", positive=True)
    # CIFAR-10's 45k images are 0.55 GB before they are copied to the device; torch and the
    # CUDA context take a few GB more.
    mem_gb: float = setting(16.0, "memory per job", metavar="GB", positive=True)
    # At most this many cells at once, so that a sweep does not take a whole partition.
    array_parallelism: int = setting(16, "jobs of the array running at once", metavar="N", positive=True)

    def __post_init__(self) -> None:
        problem = first_problem(SlurmOptions, self)
        if problem is not None:
            raise SlurmOptionsError(problem)


__all__ = ["SlurmOptions", "SlurmOptionsError"]
