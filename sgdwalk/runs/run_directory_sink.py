"""A run directory written from a loop of one's own: the files ``sgdwalk walk`` writes, so that
``sgdwalk plot`` and ``sgdwalk.load_run`` read a run from any loop.

    with sgdwalk.RunDirectorySink("runs/mine", steps_per_epoch=len(loader)) as run:
        tracker = sgdwalk.WalkTracker(model, measurement, sinks=[run])
        tracker.attach(optimizer)
        for epoch in range(1, epochs + 1):
            for inputs, targets in loader:
                ...  # zero_grad, forward, backward, optimizer.step()
            run.log_epoch(epoch, train_loss=..., val_accuracy=...)  # optional: the training figure
        run.finish(divergence=tracker.divergence)

The files are ``runlog``'s: steps.jsonl (each record as the tracker completes it, flushed at
once), epochs.jsonl (what ``log_epoch`` is given), metadata.json (status, provenance,
``written_by``: "RunDirectorySink", and the loop's own ``description``) and, once finished,
summary.json (per-epoch windows when ``steps_per_epoch`` is given). There is no config.json,
as no ``WalkConfig`` describes the loop, and no checkpoint: ``sgdwalk walk --resume`` refuses
such a run. Leaving the ``with`` block by an exception records the run as failed (Ctrl-C:
interrupted), with the error; leaving it without ``finish`` records it finished. Under
torchrun, make the sink on rank 0 alone: the tracker calls its sinks there only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from sgdwalk.instrument.record import StepRecord
from sgdwalk.runs.runlog import RunStatus, RunWriter, loop_metadata, now_iso
from sgdwalk.runs.summary import summarize_windows


class RunDirectorySink:
    """Writes the records it is called with (a ``WalkTracker`` sink) into a new run directory.

    Args:
        run_dir: the directory to make (its parents too); one that already holds a run is refused.
        steps_per_epoch: the loop's optimizer steps per epoch, if it has epochs: the records then
            get their epoch, the figures and the summary a window per epoch (omitted: windows
            are runs of consecutive measured steps, as ``sgdwalk plot`` draws them).
        description: anything JSON can hold that says what the loop trained (kept in metadata.json).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        steps_per_epoch: int | None = None,
        description: Mapping[str, Any] | None = None,
    ) -> None:
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be positive or None, got {steps_per_epoch}")
        self.run_dir = Path(run_dir)
        self.steps_per_epoch = steps_per_epoch
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._writer: RunWriter | None = RunWriter.create(
            self.run_dir, None, loop_metadata(steps_per_epoch, description)
        )
        self._records: list[dict[str, Any]] = []
        self._epochs: list[dict[str, Any]] = []

    @property
    def closed(self) -> bool:
        return self._writer is None

    def _open_writer(self) -> RunWriter:
        if self._writer is None:
            raise RuntimeError(f"the run in {self.run_dir} is closed: make a new sink (in a new directory)")
        return self._writer

    def __call__(self, record: StepRecord) -> None:
        """Write one record (the tracker calls this as each measured step completes)."""
        self._open_writer().write_step(record)
        self._records.append(record.as_dict())

    def log_epoch(self, epoch: int, **values: float | None) -> None:
        """One line of epochs.jsonl: ``epoch`` (1-based, increasing) and what the loop measured
        at its end; ``train_loss``, ``val_loss``, ``train_accuracy``, ``val_accuracy`` and
        ``sharpness`` are what ``sgdwalk plot``'s training figure draws."""
        if self._epochs and epoch <= int(self._epochs[-1]["epoch"]):
            raise ValueError(f"epoch {epoch} after epoch {self._epochs[-1]['epoch']}: epochs must increase")
        entry = {"epoch": epoch, **values}
        self._open_writer().write_epoch(entry)
        self._epochs.append(entry)

    def finish(self, *, divergence: str | None = None) -> None:
        """End the run: status "finished" ("diverged" with the tracker's ``divergence``) and summary.json."""
        writer = self._open_writer()
        status: RunStatus = "diverged" if divergence is not None else "finished"
        windows = (
            [] if self.steps_per_epoch is None else summarize_windows(self._records, self._epochs, self.steps_per_epoch)
        )
        try:
            writer.update_metadata(status=status, finished=now_iso(), divergence=divergence)
            writer.write_summary(
                {
                    "status": status,
                    "divergence": divergence,
                    "steps_per_epoch": self.steps_per_epoch,
                    "measured_steps": len(self._records),
                    "windows": [window.as_dict() for window in windows],
                    "final_epoch": self._epochs[-1] if self._epochs else None,
                }
            )
        finally:
            self._close(writer)  # the directory is given up even when the disk refused the last write

    def fail(self, error: BaseException | str, *, status: RunStatus = "failed") -> None:
        """End the run as failed (or ``status``, e.g. "interrupted"), the error recorded; no summary."""
        writer = self._open_writer()
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        try:
            writer.update_metadata(status=status, finished=now_iso(), error=text)
        finally:
            self._close(writer)

    def _close(self, writer: RunWriter) -> None:
        self._writer = None
        writer.close()

    def __enter__(self) -> RunDirectorySink:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.closed:
            return
        if error is None:
            self.finish()
        else:
            self.fail(error, status="interrupted" if isinstance(error, KeyboardInterrupt) else "failed")


__all__ = ["RunDirectorySink"]
