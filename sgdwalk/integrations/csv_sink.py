"""Records as a CSV file: a ``step`` column, then one column per metric, one row per record.

Standard library only. A metric that a record lacks (None, see ``metrics.flat_metrics``) is an
empty cell. Columns are the metrics seen so far: when a record brings a new one (the first
cosine at step 1, the first sharpness), the file is rewritten once with the wider header, so
it is one rectangular table at every moment. Numbers are written by ``repr``, which reads
back as the same float.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Final

from sgdwalk.base.atomic import atomic_write
from sgdwalk.integrations.metrics import MetricsSink

STEP_COLUMN: Final = "step"


def read_csv_metrics(path: str | os.PathLike[str]) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) per row of a file ``CsvSink`` wrote; empty cells are left out."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [
            (int(row[STEP_COLUMN]), {name: float(text) for name, text in row.items() if name != STEP_COLUMN and text})
            for row in csv.DictReader(handle)
        ]


class CsvSink(MetricsSink):
    """Appends one row per record to ``path``.

    ``path`` is made anew (an existing file is replaced), unless ``keep_through_step`` is
    given: then the rows of an existing file up to that step are kept, the later ones cut,
    and records are appended after them (a resumed run continuing its own table).
    """

    def __init__(self, path: str | os.PathLike[str], prefix: str = "", *, keep_through_step: int | None = None) -> None:
        super().__init__(prefix)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.columns: list[str] = [STEP_COLUMN]
        if keep_through_step is not None and self.path.is_file():
            self._cut_after(keep_through_step)
        else:
            self._write_header(self.path)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        new = [name for name in metrics if name not in self.columns]
        if new:
            self._widen(new)
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, self.columns).writerow(
                {STEP_COLUMN: step, **{name: repr(value) for name, value in metrics.items()}}
            )

    def _write_header(self, path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, self.columns).writeheader()

    def _cut_after(self, last_kept_step: int) -> None:
        """Keep the file's header and its rows up to ``last_kept_step`` (atomically)."""
        with self.path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = [row for row in reader if int(row[STEP_COLUMN]) <= last_kept_step]
            self.columns = list(reader.fieldnames or [STEP_COLUMN])
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        def write(temporary: Path) -> None:
            self._write_header(temporary)
            with temporary.open("a", newline="", encoding="utf-8") as handle:
                csv.DictWriter(handle, self.columns).writerows(rows)

        atomic_write(self.path, write)

    def _widen(self, new_columns: list[str]) -> None:
        """Rewrite the file with ``new_columns`` added to the header (atomically: a reader sees one table)."""
        with self.path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        self.columns = [*self.columns, *new_columns]
        self._rewrite(rows)
