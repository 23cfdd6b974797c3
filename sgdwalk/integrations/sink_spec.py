"""``KIND:WHERE`` names a sink on the command line: ``csv:FILE``, ``tensorboard:DIR``, ``mlflow:URI``.

``check_sink_target`` looks at where a sink would write before anything trains (a folder
that cannot be written or made, a folder where a file must be or a file where a folder must be, an MLflow URI MLflow cannot use or a
server that does not answer); ``open_sink`` opens it, from the start or continuing a
resumed run.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from sgdwalk.base.errors import SgdwalkError

if TYPE_CHECKING:  # the sinks import torch; `sgdwalk walk --help` reads SINK_KINDS without it
    from sgdwalk.integrations.metrics import MetricsSink

# kind -> what follows the colon (for the help text and the error).
SINK_KINDS: Final[dict[str, str]] = {"csv": "FILE", "tensorboard": "DIR", "mlflow": "URI"}
# kind -> the extra of sgdwalk it needs installed (pyproject.toml's optional-dependencies), where it needs one.
SINK_EXTRAS: Final[dict[str, str]] = {"tensorboard": "tensorboard", "mlflow": "mlflow"}

# An MLflow tracking server that does not accept a connection in this time is refused before
# training: MLflow's own client retries for minutes before it fails, and a local or lab server
# answers in milliseconds.
MLFLOW_SERVER_ANSWER_SECONDS: Final = 3.0
# The tracking URI schemes MLflow's client takes (a database's ``dialect+driver`` counts as its dialect).
MLFLOW_SERVER_SCHEMES: Final = frozenset({"http", "https"})
MLFLOW_DATABASE_SCHEMES: Final = frozenset({"postgresql", "mysql", "mssql"})
MLFLOW_OTHER_SCHEMES: Final = frozenset({"sqlite", "file", "databricks"})
DEFAULT_PORTS: Final[dict[str, int]] = {"http": 80, "https": 443}


class SinkSpecError(SgdwalkError, ValueError):
    """A ``--log-to`` value that names no sink, or a sink that cannot write where it names."""


@dataclass(frozen=True)
class SinkSpec:
    """A parsed ``--log-to`` value: ``kind`` (a key of ``SINK_KINDS``) and ``where`` it writes."""

    kind: str
    where: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.where}"


def _in_words(items: list[str]) -> str:
    """a, b or c."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def log_to_help() -> str:
    """The help of ``--log-to``, from the sink kinds and the extras they need."""
    forms = _in_words([f"{kind}:{where}" for kind, where in SINK_KINDS.items()])
    needing = [kind for kind in SINK_KINDS if kind in SINK_EXTRAS]
    extras = " / ".join(f"sgdwalk[{SINK_EXTRAS[kind]}]" for kind in needing)
    return (
        f"also log each record's numbers to {forms} (repeatable; "
        f"{' and '.join(needing)} need the extras {extras}) (default: none)"
    )


def parse_sink_spec(spec: str) -> SinkSpec:
    """``KIND:WHERE`` as a ``SinkSpec``. Raises ``SinkSpecError``."""
    kind, separator, where = spec.partition(":")
    if not separator or kind not in SINK_KINDS or not where:
        forms = ", ".join(f"{name}:{what}" for name, what in SINK_KINDS.items())
        raise SinkSpecError(f"--log-to takes one of {forms}; got {spec!r}")
    return SinkSpec(kind, where)


def _writable_folder_problem(folder: Path) -> str | None:
    if not folder.exists():
        return f"folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} cannot be written"
    return None


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (where a new folder would be made)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _csv_problem(where: str) -> str | None:
    path = Path(where)
    if path.is_dir():
        return f"{path} is a folder; name a file"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} cannot be written"
    # A missing folder is made (as ``CsvSink`` does), where the nearest existing one can be written.
    return _writable_folder_problem(_nearest_existing(path.parent))


def _tensorboard_problem(where: str) -> str | None:
    path = Path(where)
    if path.exists():
        return None if path.is_dir() else f"{path} is a file; name a folder"
    return _writable_folder_problem(_nearest_existing(path))


def _server_problem(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=MLFLOW_SERVER_ANSWER_SECONDS):
            return None
    except OSError as error:
        return f"no tracking server answers at {host}:{port} within {MLFLOW_SERVER_ANSWER_SECONDS:g} s ({error})"


def _mlflow_problem(where: str) -> str | None:
    try:
        parts = urlsplit(where)
        port = parts.port
    except ValueError as error:
        return f"{where!r} is not a URI: {error}"
    scheme = parts.scheme.partition("+")[0]
    known = MLFLOW_SERVER_SCHEMES | MLFLOW_DATABASE_SCHEMES | MLFLOW_OTHER_SCHEMES
    if scheme not in known:
        return f"{where!r} is not a tracking URI MLflow takes: start it with one of {', '.join(sorted(known))}"
    if scheme in MLFLOW_SERVER_SCHEMES | MLFLOW_DATABASE_SCHEMES and not parts.hostname:
        return f"{where!r} names no host"
    if scheme in MLFLOW_SERVER_SCHEMES and parts.hostname is not None:
        return _server_problem(parts.hostname, port if port is not None else DEFAULT_PORTS[scheme])
    if scheme == "sqlite" and parts.path not in ("", "/"):
        # sqlite:///relative.db and sqlite:////absolute.db: the database file is what follows the third slash.
        return _writable_folder_problem(Path(parts.path[1:]).absolute().parent)
    return None


def check_sink_target(spec: SinkSpec) -> None:
    """Raise ``SinkSpecError`` naming the sink when it could not write where it names."""
    problem = {"csv": _csv_problem, "tensorboard": _tensorboard_problem, "mlflow": _mlflow_problem}[spec.kind](
        spec.where
    )
    if problem is not None:
        raise SinkSpecError(f"--log-to {spec}: {problem}")


def open_sink(
    spec: str | SinkSpec,
    *,
    run_name: str | None = None,
    continue_after_step: int | None = None,
    mlflow_run_id: str | None = None,
) -> MetricsSink:
    """The sink ``spec`` names (its file, folder or MLflow run made now). ``run_name``
    names a new MLflow run.

    A resumed run continues its sinks: ``continue_after_step`` is the last step its records
    keep (-1: none), and a CSV file is cut back to it, TensorBoard events after it are
    purged; ``mlflow_run_id`` is the MLflow run to continue. Raises ``SinkSpecError`` or
    ``MissingExtraError``.
    """
    parsed = spec if isinstance(spec, SinkSpec) else parse_sink_spec(spec)
    if parsed.kind == "csv":
        from sgdwalk.integrations.csv_sink import CsvSink

        return CsvSink(parsed.where, keep_through_step=continue_after_step)
    if parsed.kind == "tensorboard":
        from sgdwalk.integrations.tensorboard_sink import TensorBoardSink

        purge_step = None if continue_after_step is None else continue_after_step + 1
        return TensorBoardSink(parsed.where, purge_step=purge_step)
    from sgdwalk.integrations.mlflow_sink import MlflowSink

    return MlflowSink(parsed.where, run_name=run_name, continue_run_id=mlflow_run_id)
