"""A claim-engine ``RunCache`` that reuses finished sweep cells and can keep its runs as cells.

``run_cache.RunCache`` keys runs by ``WalkConfig.result_hash`` (the fields that change the
records) and keeps them in memory for one session. ``SweepRunCache`` looks a config up by
the same hash in a sweep's ``cells`` folder first (``sgdwalk sweep`` writes
``OUT/cells/<hash>``), so a claims session on a login node can read what a Slurm job array
computed; a config with no done cell is run, into the cells folder when ``write`` is set (a
killed session then resumes there), else in memory as ``RunCache`` does.

Data are loaded once per process (``sweep.load_cell_data``), which also saves re-reading a
data set for each of a tier's dozens of runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sgdwalk.claims.run_cache import RunCache
from sgdwalk.runs.runner import run_walk
from sgdwalk.runs.sweep import DONE_STATUSES, cell_dir, cell_status, load_cell_data, load_cell_result, run_cell
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

    def __post_init__(self) -> None:
        self.reused: set[str] = set()

    def compute(self, config: WalkConfig) -> WalkResult:
        if self.out_root is not None and cell_status(cell_dir(self.out_root, config)) in DONE_STATUSES:
            self.reused.add(config.result_hash)
            return load_cell_result(cell_dir(self.out_root, config))
        if self.out_root is not None and self.write:
            return load_cell_result(run_cell(config.to_dict(), str(self.out_root)))
        return run_walk(config, data=load_cell_data(config), progress=False)


__all__ = ["SweepRunCache"]
