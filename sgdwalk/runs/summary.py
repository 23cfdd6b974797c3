"""Per-window summaries of a run's records, and the plain-text table `sgdwalk walk` prints.

Pure functions of the step records (``StepRecord.as_dict()`` mappings, or the rows of
``load_run(...).steps``) and the per-epoch history: nothing here trains or reads files. A
window is one epoch holding measured steps (a tracked epoch, or any epoch that
``track_every`` reached).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sgdwalk.base.tables import text_table


@dataclass(frozen=True)
class WindowSummary:
    """The walk during one epoch's measured steps (names of docs/definitions.md; heights are L(θ_t) − y_t).

    Standard deviations are the sample ones (ddof = 1) and None below two values; the
    cosine statistics skip steps without a previous gradient (the first of a window).

    ``height_se`` is the measurement's standard error of ``height_mean``: the mean of the
    steps' own standard errors, i.e. taking their errors as perfectly correlated, which
    they nearly are when every step reads the same samples. It says how much of the window
    mean is measurement noise; ``height_sd`` is how much the height moves from step to step.
    ``barriers_crossed`` and ``barriers_undecided`` count the barrier tests' outcomes.
    """

    epoch: int
    steps: int
    height_mean: float | None
    height_sd: float | None
    height_se: float | None
    samples_mean: float | None
    barriers_crossed: int | None
    barriers_undecided: int | None
    barriers: int
    max_barrier_height: float
    interior_floor_fraction: float
    cosine_mean: float | None
    cosine_sd: float | None
    distance_end: float
    train_loss: float | None
    val_accuracy: float | None
    # The window's last epoch when it spans several (a full-batch run: one update per epoch).
    last_epoch: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def epochs_label(self) -> str:
        return str(self.epoch) if self.last_epoch in (None, self.epoch) else f"{self.epoch}-{self.last_epoch}"


def epoch_of_step(step: int, steps_per_epoch: int) -> int:
    """The 1-based epoch holding 0-based step ``step``."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
    return step // steps_per_epoch + 1


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), sd


def summarize_window(
    epoch: int,
    records: Sequence[Mapping[str, Any]],
    history_entry: Mapping[str, Any] | None = None,
    last_epoch: int | None = None,
) -> WindowSummary:
    """One window's statistics from its records (in step order) and the history entry of its
    end (``last_epoch``, when the window spans several epochs)."""
    if not records:
        raise ValueError(f"epoch {epoch} has no measured steps to summarise")
    ordered = sorted(records, key=lambda record: int(record["step"]))
    height_mean, height_sd = _mean_sd(_finite(r["height_start"] for r in ordered))
    height_ses = _finite(r.get("height_start_se") for r in ordered)
    samples = _finite(r.get("samples") for r in ordered)
    tests = [r.get("barrier_test") for r in ordered]
    tested = all(test is not None for test in tests)
    cosine_mean, cosine_sd = _mean_sd(_finite(r.get("cosine") for r in ordered))
    barrier_heights = [float(r["barrier_height"]) for r in ordered if bool(r["barrier"])]
    entry = history_entry or {}
    return WindowSummary(
        epoch=epoch,
        steps=len(ordered),
        height_mean=height_mean,
        height_sd=height_sd,
        height_se=float(np.mean(height_ses)) if height_ses else None,
        samples_mean=float(np.mean(samples)) if samples else None,
        barriers_crossed=tests.count("crossed") if tested else None,
        barriers_undecided=tests.count("undecided") if tested else None,
        barriers=len(barrier_heights),
        max_barrier_height=max(barrier_heights, default=0.0),
        interior_floor_fraction=float(np.mean([bool(r["interior_floor"]) for r in ordered])),
        cosine_mean=cosine_mean,
        cosine_sd=cosine_sd,
        distance_end=float(ordered[-1]["distance_from_init"]),
        train_loss=entry.get("train_loss"),
        val_accuracy=entry.get("val_accuracy"),
        last_epoch=last_epoch,
    )


def summarize_windows(
    records: Iterable[Mapping[str, Any]],
    history: Iterable[Mapping[str, Any]],
    steps_per_epoch: int,
) -> list[WindowSummary]:
    """One ``WindowSummary`` per epoch that holds measured steps, in epoch order.

    A full-batch run (one update per epoch) gets one per run of consecutive measured steps
    instead, labelled with its first and last epoch: a window per update would say nothing
    its records do not. Its history values are those of the last evaluated epoch in it.
    """
    entries = {int(entry["epoch"]): entry for entry in history}
    if steps_per_epoch == 1:
        return [_summarize_span(span, entries) for span in _consecutive_spans(records)]
    by_epoch: dict[int, list[Mapping[str, Any]]] = {}
    for record in records:
        by_epoch.setdefault(epoch_of_step(int(record["step"]), steps_per_epoch), []).append(record)
    return [summarize_window(epoch, by_epoch[epoch], entries.get(epoch)) for epoch in sorted(by_epoch)]


def _consecutive_spans(records: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    spans: list[list[Mapping[str, Any]]] = []
    for record in sorted(records, key=lambda r: int(r["step"])):
        if spans and int(record["step"]) == int(spans[-1][-1]["step"]) + 1:
            spans[-1].append(record)
        else:
            spans.append([record])
    return spans


def _summarize_span(span: Sequence[Mapping[str, Any]], entries: Mapping[int, Mapping[str, Any]]) -> WindowSummary:
    first, last = (epoch_of_step(int(span[i]["step"]), 1) for i in (0, -1))
    evaluated = [
        entries[e] for e in range(first, last + 1) if e in entries and entries[e].get("train_loss") is not None
    ]
    return summarize_window(first, span, evaluated[-1] if evaluated else None, last_epoch=last)


# --------------------------------------------------------------------------------- table
# Significant digits in the table: heights and barriers span 1e-4 … 1, so fixed decimals
# would print zeros; 3 significant digits are what the paper's tables show.
TABLE_SIGNIFICANT_DIGITS: int = 3


def _number(value: float | None, digits: int = TABLE_SIGNIFICANT_DIGITS) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def _mean_pm_sd(mean: float | None, sd: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "-"
    return _number(mean) if sd is None else f"{_number(mean)} ± {_number(sd)}"


TABLE_COLUMNS: tuple[str, ...] = (
    "epoch",
    "steps",
    "height (mean ± sd)",
    "height se",
    "barriers",
    "tests crossed/undecided",
    "samples",
    "max barrier",
    "interior floor",
    "cosine (mean ± sd)",
    "distance",
    "train loss",
    "val acc",
)


def render_table(summaries: Sequence[WindowSummary]) -> str:
    """A fixed-width text table, one row per window (columns: ``TABLE_COLUMNS``)."""
    rows = [
        (
            s.epochs_label,
            str(s.steps),
            _mean_pm_sd(s.height_mean, s.height_sd),
            _number(s.height_se, 2),
            str(s.barriers),
            "-" if s.barriers_crossed is None else f"{s.barriers_crossed}/{s.barriers_undecided}",
            _number(s.samples_mean, 4),
            _number(s.max_barrier_height),
            f"{s.interior_floor_fraction:.0%}",
            _mean_pm_sd(s.cosine_mean, s.cosine_sd),
            _number(s.distance_end),
            _number(s.train_loss),
            "-" if s.val_accuracy is None else f"{s.val_accuracy:.1%}",
        )
        for s in summaries
    ]
    if not rows:
        return "(no measured steps)\n"
    return "\n".join(text_table(TABLE_COLUMNS, rows, align="right", rule=True)) + "\n"


__all__ = [
    "TABLE_COLUMNS",
    "WindowSummary",
    "epoch_of_step",
    "render_table",
    "summarize_window",
    "summarize_windows",
]
