"""The number of processes a run trains with, across its starts: recorded, and kept on resume.

Under ``torchrun`` each of N processes trains on its own 1/N share of every global minibatch
and DistributedDataParallel sums the shares' gradients, so N decides the order float32 sums
are taken in (and, with batch norm, what each forward pass normalises over): the same
checkpoint continued by another number of processes walks another trajectory. A resume
therefore runs under the world size the run last ran under, or is refused with the command
that reproduces it. ``metadata.json`` keeps ``world_size`` (the current one) and
``world_sizes`` (one entry per start and resume, in order).

Pure functions of a run's metadata; torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sgdwalk.runs.owner import RunDirectoryError

# A run whose metadata predates the key trained in one process (the runner recorded
# ``world_size`` from the first distributed release on).
SINGLE_PROCESS = 1


def recorded_world_size(metadata: Mapping[str, Any]) -> int:
    """The world size the run last ran under."""
    return int(metadata.get("world_size", SINGLE_PROCESS))


def world_sizes_after(metadata: Mapping[str, Any], world_size: int) -> list[int]:
    """The run's world sizes with a start under ``world_size`` appended (a run from before
    ``world_sizes`` was kept contributes its one ``world_size``)."""
    earlier = metadata.get("world_sizes")
    before = [int(size) for size in earlier] if earlier is not None else [recorded_world_size(metadata)]
    return [*before, world_size]


def resume_command(run_dir: str | Path, world_size: int) -> str:
    """The command that continues ``run_dir`` under ``world_size`` processes."""
    if world_size == SINGLE_PROCESS:
        return f"sgdwalk walk --resume {run_dir}"
    return f"torchrun --nproc-per-node {world_size} -m sgdwalk walk --resume {run_dir}"


def check_resume_world_size(run_dir: str | Path, metadata: Mapping[str, Any], world_size: int) -> None:
    """Raise ``RunDirectoryError`` (one line naming both sizes and the command to use) when
    ``run_dir`` last ran under another world size than ``world_size``."""
    recorded = recorded_world_size(metadata)
    if recorded == world_size:
        return
    raise RunDirectoryError(
        f"{run_dir} ran under {_processes(recorded)} and is resumed under {_processes(world_size)}: "
        "the minibatches would be split differently and the run would leave its trajectory; "
        f"resume it with `{resume_command(run_dir, recorded)}`"
    )


def _processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes"


__all__ = [
    "check_resume_world_size",
    "recorded_world_size",
    "resume_command",
    "world_sizes_after",
]
