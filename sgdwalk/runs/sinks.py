"""The ``--log-to`` sinks of one run: checked before training, opened when the run starts,
each record to each, and a sink that fails dropped while the run goes on.

The run directory's steps.jsonl is the record; a sink is a copy in another tool. So:

- A resumed run continues each sink from its checkpoint: the sinks are opened after the
  run directory is cut back (``on_start``), at the step of its last kept record; a finished
  run, resumed, trains nothing and opens no sink.
- The MLflow run a sink starts is kept in metadata.json (``mlflow_run_ids``, by URI), so
  that a resumed run continues it instead of starting a second one.
- A sink that raises (a full disk, a server gone) is dropped: a warning on the log and an
  entry in metadata.json's ``dropped_sinks`` (``sink``, ``step``, ``error``); the run and
  the other sinks go on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

from sgdwalk.instrument.record import StepRecord
from sgdwalk.integrations.metrics import MetricsSink
from sgdwalk.integrations.sink_spec import SinkSpec, SinkSpecError, check_sink_target, open_sink, parse_sink_spec
from sgdwalk.runs.runlog import last_step, load_run_metadata, update_run_metadata

logger = logging.getLogger(__name__)

MLFLOW_RUN_IDS_KEY: Final = "mlflow_run_ids"
DROPPED_SINKS_KEY: Final = "dropped_sinks"
# The --log-to values a run has logged to, so that a resume that leaves one out says so.
LOGGED_TO_KEY: Final = "log_to"
# A resumed run that kept no record continues its sinks from before the first step.
NO_STEP_KEPT: Final = -1


def _place(spec: SinkSpec) -> tuple[str, str]:
    """The sink's kind and where it writes, one spelling per place: a file or folder resolved
    (from the current folder, as the sink opens it), a URI as given."""
    return spec.kind, str(Path(spec.where).resolve()) if spec.kind in ("csv", "tensorboard") else spec.where


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class RunSinks:
    """The sinks ``specs`` name, for one run. ``check`` the targets, ``start`` them with the
    run directory (the ``on_start`` of ``run_walk`` / ``resume_walk``), pass each record
    (``__call__``, the ``on_record``), then ``close``."""

    def __init__(self, specs: list[str]) -> None:
        """Raises ``SinkSpecError`` for a value that names no sink, or two that name one target
        (each record would be written to it twice)."""
        self.specs: list[SinkSpec] = [parse_sink_spec(spec) for spec in specs]
        seen: dict[tuple[str, str], SinkSpec] = {}
        for spec in self.specs:
            target = _place(spec)
            if target in seen:
                raise SinkSpecError(
                    f"--log-to {seen[target]} and --log-to {spec} name the same target: each record would be "
                    "written to it twice; name it once"
                )
            seen[target] = spec
        self.open: list[tuple[SinkSpec, MetricsSink]] = []
        self.run_dir: Path | None = None

    def check(self) -> None:
        """Raise ``SinkSpecError`` for the first sink that could not write where it names."""
        for spec in self.specs:
            check_sink_target(spec)

    def start(self, run_dir: Path | None, *, resumed: bool) -> None:
        """Open every sink: anew, or (``resumed``) continuing from the run's last kept record.
        A sink that fails to open is dropped as one that fails later is."""
        self.run_dir = run_dir
        metadata = {} if run_dir is None else load_run_metadata(run_dir)
        run_ids: dict[str, str] = dict(metadata.get(MLFLOW_RUN_IDS_KEY) or {})
        continue_after: int | None = None
        if resumed and run_dir is not None:
            kept = last_step(run_dir)
            continue_after = NO_STEP_KEPT if kept is None else kept
        logged_to: list[str] = list(metadata.get(LOGGED_TO_KEY) or []) if resumed else []
        # Compared by where they write: one file under two spellings is one sink.
        named = {_place(spec) for spec in self.specs}
        for left_out in (spec for spec in logged_to if _place(parse_sink_spec(spec)) not in named):
            logger.warning("this run logged to --log-to %s before; resumed without it, that copy stops at the "
                           "interruption (and keeps any records after its last checkpoint): name it again to "
                           "continue it", left_out)  # fmt: skip
        if run_dir is not None:
            # Kept as resolved places, so a resume from another folder still knows them.
            known = {_place(parse_sink_spec(spec)) for spec in logged_to}
            added = [f"{kind}:{where}" for kind, where in map(_place, self.specs) if (kind, where) not in known]
            self._update_metadata(**{LOGGED_TO_KEY: [*logged_to, *added]})
        for spec in self.specs:
            try:
                sink = open_sink(
                    spec,
                    run_name=None if run_dir is None else run_dir.name,
                    continue_after_step=continue_after,
                    mlflow_run_id=run_ids.get(spec.where) if resumed else None,
                )
            except Exception as error:  # a sink must not stop the run; dropped and recorded
                self._drop(spec, None, error)
                continue
            self.open.append((spec, sink))
            run_id = getattr(sink, "run_id", None)
            if spec.kind == "mlflow" and isinstance(run_id, str) and run_ids.get(spec.where) != run_id:
                run_ids[spec.where] = run_id
                self._update_metadata(**{MLFLOW_RUN_IDS_KEY: run_ids})

    def __call__(self, record: StepRecord) -> None:
        for spec, sink in list(self.open):
            try:
                sink(record)
            except Exception as error:  # the record is safe in steps.jsonl; the run goes on
                self.open.remove((spec, sink))
                self._drop(spec, record.step, error)
                self._close_quietly(spec, sink, failed=True)

    def close(self, *, failed: bool) -> None:
        """Close every open sink (``failed``: the run raised or was stopped; an MLflow run ends FAILED)."""
        for spec, sink in self.open:
            self._close_quietly(spec, sink, failed=failed)
        self.open = []

    def _drop(self, spec: SinkSpec, step: int | None, error: BaseException) -> None:
        where = "when opened" if step is None else f"at step {step}"
        logger.warning("--log-to %s failed %s and is dropped (%s); the records are in the run directory", spec, where,
                       _error_text(error))  # fmt: skip
        if self.run_dir is None:
            return
        dropped: list[dict[str, Any]] = list(load_run_metadata(self.run_dir).get(DROPPED_SINKS_KEY) or [])
        dropped.append({"sink": str(spec), "step": step, "error": _error_text(error)})
        self._update_metadata(**{DROPPED_SINKS_KEY: dropped})

    def _update_metadata(self, **changes: Any) -> None:
        if self.run_dir is not None:
            update_run_metadata(self.run_dir, **changes)

    @staticmethod
    def _close_quietly(spec: SinkSpec, sink: MetricsSink, *, failed: bool) -> None:
        try:
            sink.close_failed() if failed else sink.close()
        except Exception as error:  # closing a copy must not hide the run's outcome
            logger.warning("--log-to %s failed to close (%s)", spec, _error_text(error))


__all__ = ["DROPPED_SINKS_KEY", "LOGGED_TO_KEY", "MLFLOW_RUN_IDS_KEY", "RunSinks"]
