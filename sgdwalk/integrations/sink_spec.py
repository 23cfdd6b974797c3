"""``KIND:WHERE`` names a sink on the command line: ``csv:FILE``, ``tensorboard:DIR``, ``mlflow:URI``."""

from __future__ import annotations

from typing import Final

from sgdwalk.base.errors import SgdwalkError
from sgdwalk.integrations.metrics import MetricsSink

# kind -> what follows the colon (for the help text and the error).
SINK_KINDS: Final[dict[str, str]] = {"csv": "FILE", "tensorboard": "DIR", "mlflow": "URI"}


class SinkSpecError(SgdwalkError, ValueError):
    """A ``--log-to`` value that names no sink."""


def open_sink(spec: str, *, run_name: str | None = None) -> MetricsSink:
    """The sink ``spec`` names (its file, folder or MLflow run made now). ``run_name``
    names a new MLflow run. Raises ``SinkSpecError`` or ``MissingExtraError``."""
    kind, separator, where = spec.partition(":")
    if not separator or kind not in SINK_KINDS or not where:
        forms = ", ".join(f"{name}:{what}" for name, what in SINK_KINDS.items())
        raise SinkSpecError(f"--log-to takes one of {forms}; got {spec!r}")
    if kind == "csv":
        from sgdwalk.integrations.csv_sink import CsvSink

        return CsvSink(where)
    if kind == "tensorboard":
        from sgdwalk.integrations.tensorboard_sink import TensorBoardSink

        return TensorBoardSink(where)
    from sgdwalk.integrations.mlflow_sink import MlflowSink

    return MlflowSink(where, run_name=run_name)
