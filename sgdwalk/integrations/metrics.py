"""A record as a flat dict of numbers at a step: the one shape every metrics logger accepts.

Lightning's ``Logger.log_metrics(metrics: dict[str, float], step: int)`` is what its CSV,
TensorBoard, W&B and MLflow loggers all take, and what each sink here writes. A
``StepRecord`` becomes that dict by ``flat_metrics``:

- numbers stay numbers; the flags ``interior_floor`` and ``barrier`` become 0 or 1;
- a field that is None (no cosine at a walk's first step, no sharpness on most steps, no
  standard error below two samples) is left out: a logger draws a gap, not a fake zero;
- the per-point tuples ``segment_losses``, ``segment_loss_se`` and ``segment_floor_se``
  become one number per point, named with the point's index: ``segment_losses/0`` is the
  loss at α = 0, ``segment_losses/K`` at α = 1;
- ``group_lrs`` (every parameter group's rate, when they differ) becomes one number per
  group, ``group_lrs/0`` for the first group;
- ``top_eigenvalues`` (when scheduled) becomes one number per eigenvalue, ``top_eigenvalues/0``
  the largest;
- ``barrier_test`` (a word) becomes one indicator per outcome, ``barrier_test/crossed``,
  ``barrier_test/not_crossed`` and ``barrier_test/undecided``, so a mean over steps is the
  share of each outcome;
- ``step`` is the step the dict is logged at, not a metric;
- ``segment_alphas`` is left out: the α grid is the same at every step of a walk (the
  tracker's ``alphas`` plus 1), so it is a setting, and index ``i`` above names its point.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Final, Self

from sgdwalk.instrument.record import RECORD_FIELDS, StepRecord
from sgdwalk.instrument.uncertainty import BARRIER_TEST_OUTCOMES

# Fields that are not a number at the step, and why (the module docstring says it longer).
NOT_LOGGED: Final[dict[str, str]] = {
    "step": "the step the metrics are logged at",
    "segment_alphas": "the α grid, the same at every step: a setting, named by the index of segment_losses/i",
}
PER_POINT_FIELDS: Final = ("segment_losses", "segment_loss_se", "segment_floor_se")
PER_GROUP_FIELDS: Final = ("group_lrs",)
PER_INDEX_FIELDS: Final = (*PER_POINT_FIELDS, *PER_GROUP_FIELDS, "top_eigenvalues")
OUTCOME_FIELDS: Final = ("barrier_test",)


def _outcome_name(outcome: str) -> str:
    return outcome.replace(" ", "_")


def flat_metrics(record: StepRecord, prefix: str = "") -> dict[str, float]:
    """The record's numbers by name (each name starting with ``prefix``); see the module docstring."""
    metrics: dict[str, float] = {}
    for name in RECORD_FIELDS:
        value = getattr(record, name)
        if name in NOT_LOGGED or value is None:
            continue
        if name in PER_INDEX_FIELDS:
            for index, point_value in enumerate(value):
                metrics[f"{prefix}{name}/{index}"] = float(point_value)
        elif name in OUTCOME_FIELDS:
            for outcome in BARRIER_TEST_OUTCOMES:
                metrics[f"{prefix}{name}/{_outcome_name(outcome)}"] = float(value == outcome)
        else:
            metrics[prefix + name] = float(value)
    return metrics


class MetricsSink(ABC):
    """A tracker sink (``WalkTracker(..., sinks=[sink])``) that logs each record's
    ``flat_metrics`` at its step. Subclasses write ``log_metrics``; ``close`` flushes.

    Also a context manager: ``with TensorBoardSink("tb") as sink: ...`` closes it.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def __call__(self, record: StepRecord) -> None:
        self.log_metrics(flat_metrics(record, self.prefix), record.step)

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Write ``metrics`` at ``step``."""

    def close(self) -> None:
        """Flush and release what the sink holds (a file, a run); nothing by default."""
        return None

    def close_failed(self) -> None:
        """``close`` after the run failed or was stopped (an MLflow run ends FAILED); ``close`` by default."""
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
