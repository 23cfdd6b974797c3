"""A walk as the command line launches it: under ``torchrun``'s process group when there is
one, one run directory for all processes, and each record fanned out to the ``--log-to``
sinks, whose runs end FAILED on any error or Ctrl-C.

The command keeps parsing and printing: it hands in the sinks' specs and what to announce,
and reads back from ``LaunchedWalk`` where the records went and whether this process reports.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sgdwalk.base.errors import SgdwalkError
from sgdwalk.instrument.offload_targets import OffloadTarget
from sgdwalk.runs.distribution import same_out_dir, torchrun_process_group
from sgdwalk.runs.runlog import load_run_config
from sgdwalk.runs.runner import StartCallback, resume_walk, run_walk
from sgdwalk.runs.sinks import RunSinks
from sgdwalk.runs.walk_result import WalkResult
from sgdwalk.training.config import WalkConfig


@dataclass
class LaunchedWalk:
    """Where a launched walk's records go, and whether this process reports it (process 0
    under torchrun); kept up to date while it runs, so that an interrupt names the right folder."""

    run_dir: Path
    reports: bool = True


@contextmanager
def checked_sinks(specs: Sequence[str]) -> Iterator[RunSinks]:
    """The ``--log-to`` sinks, their targets checked first (a bad one fails before any training:
    ``SinkSpecError``), closed afterwards: FAILED unless the walk returned."""
    sinks = RunSinks(list(specs))
    sinks.check()
    failed = True  # until the walk returns
    try:
        yield sinks
        failed = False
    finally:
        sinks.close(failed=failed)


def _start(announce: StartCallback, sinks: RunSinks, *, resumed: bool) -> StartCallback:
    """Announce the run, then open its sinks: after the run directory is cut back to its
    checkpoint, so that each sink continues from the same step."""

    def start(run_dir: Path | None) -> None:
        announce(run_dir)
        sinks.start(run_dir, resumed=resumed)

    return start


def resumed_device(run_dir: Path) -> str:
    """The device the run's own config names (torchrun's backend follows it); "auto" where
    the config cannot be read (``resume_walk`` then says why)."""
    try:
        return load_run_config(run_dir).device
    except SgdwalkError:
        return "auto"


def launch_walk(
    config: WalkConfig, sink_specs: Sequence[str], announce: StartCallback, launched: LaunchedWalk
) -> WalkResult:
    """``run_walk`` under the launch's process group, in process 0's run directory, its records to the sinks."""
    with checked_sinks(sink_specs) as sinks, torchrun_process_group(config.device) as shard:
        launched.reports = shard.is_writer
        config = same_out_dir(config)
        launched.run_dir = Path(str(config.out_dir))
        on_start = _start(announce, sinks, resumed=False)
        return run_walk(config, on_start=on_start, on_record=sinks if sinks.specs else None)


def launch_resume(
    run_dir: Path,
    sink_specs: Sequence[str],
    announce: StartCallback,
    launched: LaunchedWalk,
    *,
    progress: bool | None,
    offload: OffloadTarget | None = None,
) -> WalkResult:
    """``resume_walk`` under the launch's process group, its records to the sinks (continued from the checkpoint)."""
    with checked_sinks(sink_specs) as sinks:
        on_start = _start(announce, sinks, resumed=True)
        with torchrun_process_group(resumed_device(run_dir)) as shard:
            launched.reports = shard.is_writer
            return resume_walk(
                run_dir, progress=progress, offload=offload, on_start=on_start, on_record=sinks if sinks.specs else None
            )


__all__ = ["LaunchedWalk", "checked_sinks", "launch_resume", "launch_walk", "resumed_device"]
