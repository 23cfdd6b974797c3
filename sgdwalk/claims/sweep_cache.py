"""A claim-engine ``RunCache`` that reuses finished sweep cells and can keep its runs as cells.

``run_cache.RunCache`` keys runs by ``WalkConfig.result_hash`` (the fields that change the
records) and keeps them in memory for one session. ``SweepRunCache`` looks a config up by
the same hash in a sweep's ``cells`` folder first (``sgdwalk sweep`` writes
``OUT/cells/<hash>``), so a claims session on a login node can read what a Slurm job array
computed; a config with no done cell is run, into the cells folder when ``write`` is set (a
killed session then resumes there), else in memory as ``RunCache`` does.

Several processes may share one folder (the workers of a tier under pytest-xdist): a cell
another process is running is waited for (its lock, ``owner.hold_run_directory``) and then
read, never run twice; ``prepare`` makes first the cells of a check that nobody is running,
so that two workers needing the same runs share them out.

Data are loaded once per process (``sweep.load_cell_data``), which also saves re-reading a
data set for each of a tier's dozens of runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sgdwalk.claims.run_cache import RunCache
from sgdwalk.runs.runner import run_walk
from sgdwalk.runs.sweep import (
    BUSY_POLL_SECONDS,
    DONE_STATUSES,
    CellBusyError,
    cell_dir,
    cell_status,
    load_cell_data,
    load_cell_result,
    run_cell,
)
from sgdwalk.runs.walk_result import WalkResult
from sgdwalk.training.config import WalkConfig


@dataclass
class SweepRunCache(RunCache):
    """``RunCache`` backed by a sweep folder ``out_root`` (holding ``cells/``), or memory only.

    Attributes:
        out_root: the sweep's OUT folder; None keeps every run in memory.
        write: run missing cells into ``out_root`` (else in memory, leaving the folder as it is).
        reused: result hashes answered from done cells, for the report.
    """

    out_root: Path | None = None
    write: bool = True
    # How often a cell another process is running is looked at again: the sweep's own interval.
    poll_seconds: float = BUSY_POLL_SECONDS

    def __post_init__(self) -> None:
        self.reused: set[str] = set()

    def compute(self, config: WalkConfig) -> WalkResult:
        while True:
            try:
                return self._compute_now(config)
            except CellBusyError:
                # Another process is running it: its lock goes when that run ends (or the
                # process dies, and the cell is then resumed here).
                time.sleep(self.poll_seconds)

    def prepare(self, configs: Sequence[WalkConfig]) -> None:
        """Make, in order, the runs of ``configs`` not made yet whose cells no other process is running."""
        if self.out_root is None or not self.write:
            return
        for config in configs:
            if config.result_hash in self.results:
                continue
            try:
                self.keep(config, self._compute_now)
            except CellBusyError:
                continue  # run() waits for it once the free ones are made

    def _compute_now(self, config: WalkConfig) -> WalkResult:
        """The run of ``config``, read from its done cell or made; ``CellBusyError`` at once
        if another process is running the cell."""
        if self.out_root is not None and cell_status(cell_dir(self.out_root, config)) in DONE_STATUSES:
            self.reused.add(config.result_hash)
            return load_cell_result(cell_dir(self.out_root, config))
        if self.out_root is not None and self.write:
            return load_cell_result(run_cell(config.to_dict(), str(self.out_root)))
        return run_walk(config, data=load_cell_data(config), progress=False)


__all__ = ["SweepRunCache"]
