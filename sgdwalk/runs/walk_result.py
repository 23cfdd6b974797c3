"""What a run produced: ``WalkResult``, the content of its run directory in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdwalk.instrument.record import StepRecord
from sgdwalk.runs.runlog import Run
from sgdwalk.runs.summary import WindowSummary, summarize_windows
from sgdwalk.training.config import WalkConfig


@dataclass
class WalkResult:
    """What a run produced (the same content as its run directory, in memory)."""

    config: WalkConfig
    records: list[StepRecord]
    history: list[dict[str, Any]]
    windows: list[WindowSummary]
    status: str
    divergence: str | None
    steps_per_epoch: int
    run_dir: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.divergence is not None

    @classmethod
    def from_run(cls, run: Run) -> WalkResult:
        """The result a run returned, rebuilt from its directory (the window summaries are
        recomputed from the records, as the run computed them)."""
        steps_per_epoch = run.steps_per_epoch or 1
        history = run.epoch_entries()
        records = run.step_records()
        return cls(
            config=run.config,
            records=records,
            history=history,
            windows=summarize_windows((record.as_dict() for record in records), history, steps_per_epoch),
            status=run.status,
            divergence=run.metadata.get("divergence"),
            steps_per_epoch=steps_per_epoch,
            run_dir=run.path,
            metadata=run.metadata,
        )
