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

    The run: ``run_id`` when given; else the active run (``mlflow.start_run()``) when there is
    one and ``tracking_uri`` is None; else a new run in ``experiment``, ended by ``close``.
    A run the sink did not start is left running.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        run_id: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        super().__init__(prefix)
        mlflow = require("mlflow", extra="mlflow", needed_by="MlflowSink")
        self._metric = require("mlflow.entities", extra="mlflow", needed_by="MlflowSink").Metric
        active = mlflow.active_run() if tracking_uri is None and run_id is None else None
        self.client: Any = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self._owns_run = run_id is None and active is None
        if run_id is not None:
            self.run_id = run_id
        elif active is not None:
            self.run_id = active.info.run_id
        else:
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        timestamp = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[self._metric(name, value, timestamp, step) for name, value in metrics.items()]
        )

    def close(self) -> None:
        if self._owns_run:
            self.client.set_terminated(self.run_id)
