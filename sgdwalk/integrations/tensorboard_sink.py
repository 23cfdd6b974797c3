"""Records as TensorBoard scalars, through torch's own ``SummaryWriter`` (extra ``tensorboard``).

TensorBoard stores a scalar as a 32-bit float, so a value reads back rounded to float32.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from sgdwalk.integrations.metrics import MetricsSink
from sgdwalk.integrations.optional import require

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

# Groups sgdwalk's charts apart from the user's own in the same run.
DEFAULT_PREFIX = "sgdwalk/"

# Charts of the Custom Scalars dashboard, each drawing several of a record's series in one:
# the segment is one chart of its K + 1 losses (a line per grid point α), not K + 1 charts.
CHARTS: dict[str, tuple[str, ...]] = {
    "segment: loss at each grid point α": ("segment_losses/",),
    "segment: standard error of the loss at each α": ("segment_loss_se/",),
    "heights above the floor": ("height_start$", "height_end$"),
    "consecutive gradients and updates: cosine": ("cosine$", "update_cosine$"),
    "barrier test": ("barrier_test/",),
}


def custom_scalars_layout(prefix: str) -> dict[str, dict[str, list[object]]]:
    """The layout ``SummaryWriter.add_custom_scalars`` takes: one category, a Multiline chart
    per entry of ``CHARTS``, whose series are the metrics (named with ``prefix``) matching."""
    return {
        f"{prefix}walk": {
            title: ["Multiline", [f"^{re.escape(prefix)}{pattern}" for pattern in patterns]]
            for title, patterns in CHARTS.items()
        }
    }


class TensorBoardSink(MetricsSink):
    """Logs each record's metrics as scalars at its step.

    Args:
        log_dir_or_writer: a folder for a new event file (closed by ``close``), or a
            ``SummaryWriter`` the caller already has (flushed by ``close``, left open: it is theirs).
        prefix: put before every metric name (default "sgdwalk/").
        purge_step: with a folder, hide the events already there at this step and after
            (``SummaryWriter``'s ``purge_step``): a resumed run logs them again.
        charts: write the Custom Scalars layout (``custom_scalars_layout``) that draws the
            segment as one chart of its grid points; default: into an event file of its own,
            not into a writer of the caller's (a run has one layout, which may be theirs).
    """

    def __init__(
        self,
        log_dir_or_writer: str | os.PathLike[str] | SummaryWriter,
        prefix: str = DEFAULT_PREFIX,
        *,
        purge_step: int | None = None,
        charts: bool | None = None,
    ) -> None:
        super().__init__(prefix)
        require("tensorboard", extra="tensorboard", needed_by="TensorBoardSink")
        from torch.utils.tensorboard import SummaryWriter

        if isinstance(log_dir_or_writer, SummaryWriter):
            self.writer, self._owns_writer = log_dir_or_writer, False
        else:
            self.writer, self._owns_writer = SummaryWriter(os.fspath(log_dir_or_writer), purge_step=purge_step), True
        if self._owns_writer if charts is None else charts:
            self.writer.add_custom_scalars(custom_scalars_layout(prefix))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)
        # On disk before the walk goes on, as steps.jsonl is: the writer hands events to a thread
        # and flushes every 2 minutes, and a killed run would lose steps that its checkpoint
        # saw and that a resume does not make again.
        self.writer.flush()

    def close(self) -> None:
        if self._owns_writer:
            self.writer.close()
        else:
            self.writer.flush()
