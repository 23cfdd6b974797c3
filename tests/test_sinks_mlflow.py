"""The MLflow sink's round trip: write records to a local SQLite tracking store, read them
back with ``MlflowClient().get_metric_history``, compare.

MLflow stores metric values as double precision, so every value must read back exactly.
SQLite, not MLflow's file store: MLflow 3 refuses the file store unless told to
(``MLFLOW_ALLOW_FILE_STORE``; it is in maintenance mode) and names SQLite as the local store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sgdwalk.instrument.record import StepRecord
from sgdwalk.integrations.metrics import flat_metrics
from sgdwalk.integrations.mlflow_sink import DEFAULT_PREFIX, MlflowSink
from sgdwalk.integrations.sink_spec import open_sink
from tests.integration_helpers import optional_library, walk_records

mlflow = optional_library("mlflow", "mlflow")

# Slow: MLflow store round trips (importing MLflow alone takes seconds; conftest.py leaves this
# module uncollected without --runslow).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        # MLflow 3.17's own tracking store asks SQLAlchemy 2.1 for the `noload` strategy, which 2.1
        # deprecates; it is inside MLflow, not in anything sgdwalk calls.
        "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning",
    ),
]


@pytest.fixture(scope="module")
def records() -> list[StepRecord]:
    return walk_records()


def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def metric_histories(client: Any, run_id: str, names: set[str]) -> dict[str, list[tuple[int, float]]]:
    return {name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name)) for name in names}


def expected_histories(records: list[StepRecord], prefix: str) -> dict[str, list[tuple[int, float]]]:
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for name, value in flat_metrics(record, prefix).items():
            expected.setdefault(name, []).append((record.step, value))
    return expected


def test_mlflow_round_trip(records: list[StepRecord], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything MLflow puts in the working directory stays in tmp_path
    with MlflowSink(store_uri(tmp_path), run_name="round-trip") as sink:
        for record in records:
            sink(record)
    client = mlflow.MlflowClient(tracking_uri=store_uri(tmp_path))
    run = client.get_run(sink.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "round-trip"
    expected = expected_histories(records, DEFAULT_PREFIX)
    assert set(run.data.metrics) == set(expected), "the run holds exactly the logged metrics"
    assert metric_histories(client, sink.run_id, set(expected)) == expected


def test_the_users_active_run_is_logged_into_and_left_running(
    records: list[StepRecord], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(store_uri(tmp_path))
    try:
        with mlflow.start_run() as active:
            sink = MlflowSink()
            sink(records[0])
            sink.close()
            assert sink.run_id == active.info.run_id
            assert mlflow.MlflowClient().get_run(sink.run_id).info.status == "RUNNING"
        client = mlflow.MlflowClient()
        expected = expected_histories(records[:1], DEFAULT_PREFIX)
        assert metric_histories(client, active.info.run_id, set(expected)) == expected
    finally:
        mlflow.set_tracking_uri(None)


def test_log_to_mlflow_opens_this_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sink = open_sink(f"mlflow:{store_uri(tmp_path)}", run_name="from-the-flag")
    assert isinstance(sink, MlflowSink)
    sink.close()
    assert mlflow.MlflowClient(tracking_uri=store_uri(tmp_path)).get_run(sink.run_id).info.run_name == "from-the-flag"
