"""Records as TensorBoard scalars, through torch's own ``SummaryWriter`` (extra ``tensorboard``).

TensorBoard stores a scalar as a 32-bit float, so a value reads back rounded to float32.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sgdwalk.integrations.metrics import MetricsSink
from sgdwalk.integrations.optional import require

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

# Groups sgdwalk's charts apart from the user's own in the same run.
DEFAULT_PREFIX = "sgdwalk/"


class TensorBoardSink(MetricsSink):
    """Logs each record's metrics as scalars at its step.

    Args:
        log_dir_or_writer: a folder for a new event file (closed by ``close``), or a
            ``SummaryWriter`` the caller already has (flushed by ``close``, left open: it is theirs).
        prefix: put before every metric name (default "sgdwalk/").
        purge_step: with a folder, hide the events already there at this step and after
            (``SummaryWriter``'s ``purge_step``): a resumed run logs them again.
    """

    def __init__(
        self,
        log_dir_or_writer: str | os.PathLike[str] | SummaryWriter,
        prefix: str = DEFAULT_PREFIX,
        *,
        purge_step: int | None = None,
    ) -> None:
        super().__init__(prefix)
        require("tensorboard", extra="tensorboard", needed_by="TensorBoardSink")
        from torch.utils.tensorboard import SummaryWriter

        if isinstance(log_dir_or_writer, SummaryWriter):
            self.writer, self._owns_writer = log_dir_or_writer, False
        else:
            self.writer, self._owns_writer = SummaryWriter(os.fspath(log_dir_or_writer), purge_step=purge_step), True

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
