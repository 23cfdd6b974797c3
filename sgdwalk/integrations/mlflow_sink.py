"""Records as MLflow metrics, through ``MlflowClient`` (extra ``mlflow``: ``mlflow-skinny``).

Any tracking URI MLflow takes: a server (``http://...``), a local SQLite store
(``sqlite:///mlflow.db``; the extra brings SQLAlchemy and Alembic for it) or the older
file store (``file:./mlruns``, which MLflow 3 refuses unless ``MLFLOW_ALLOW_FILE_STORE=true``).
"""

from __future__ import annotations

import time
from typing import Any

from sgdwalk.integrations.metrics import MetricsSink
from sgdwalk.integrations.optional import require

DEFAULT_PREFIX = "sgdwalk/"
DEFAULT_EXPERIMENT = "sgdwalk"


class MlflowSink(MetricsSink):
    """Logs each record's metrics (one ``log_batch`` per record) at its step.

    The run: ``run_id`` when given; else ``continue_run_id``, a run this sink started
    before (a resumed walk: set running again, its steps already logged skipped, ended by
    ``close``); else the active run (``mlflow.start_run()``) when there is one and
    ``tracking_uri`` is None; else a new run in ``experiment``, ended by ``close``
    (FINISHED; ``close_failed``: FAILED). A run the sink did not start is left running.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        run_id: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        continue_run_id: str | None = None,
    ) -> None:
        super().__init__(prefix)
        mlflow = require("mlflow", extra="mlflow", needed_by="MlflowSink")
        self._metric = require("mlflow.entities", extra="mlflow", needed_by="MlflowSink").Metric
        given = run_id is not None or continue_run_id is not None
        active = mlflow.active_run() if tracking_uri is None and not given else None
        self.client: Any = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self._owns_run = run_id is None and active is None
        # Steps up to this one are in the run already (a continued run): not logged twice.
        self.logged_through_step: int | None = None
        if run_id is not None:
            self.run_id = run_id
        elif continue_run_id is not None:
            self.run_id = continue_run_id
            self.logged_through_step = last_logged_step(self.client, continue_run_id)
            self.client.update_run(continue_run_id, status="RUNNING")
        elif active is not None:
            self.run_id = active.info.run_id
        else:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.logged_through_step is not None and step <= self.logged_through_step:
            return
        timestamp = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[self._metric(name, value, timestamp, step) for name, value in metrics.items()]
        )

    def close(self) -> None:
        if self._owns_run:
            self.client.set_terminated(self.run_id, status="FINISHED")

    def close_failed(self) -> None:
        if self._owns_run:
            self.client.set_terminated(self.run_id, status="FAILED")


def last_logged_step(client: Any, run_id: str) -> int | None:
    """The last step at which run ``run_id`` holds any metric (None: none)."""
    names = client.get_run(run_id).data.metrics
    steps = [metric.step for name in names for metric in client.get_metric_history(run_id, name)]
    return max(steps, default=None)
