"""A record as a flat dict of numbers, and the CSV sink's round trip through the csv module."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import RECORD_FIELDS, StepRecord
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.instrument.uncertainty import BARRIER_TEST_OUTCOMES
from sgdwalk.integrations.csv_sink import CsvSink, read_csv_metrics
from sgdwalk.integrations.metrics import NOT_LOGGED, PER_INDEX_FIELDS, flat_metrics
from sgdwalk.integrations.optional import MissingExtraError, require
from sgdwalk.integrations.sink_spec import SinkSpecError, open_sink
from tests.helpers import classification_data, mlp
from tests.integration_helpers import walk_records


@pytest.fixture(scope="module")
def records() -> list[StepRecord]:
    return walk_records()


def test_the_walk_has_every_kind_of_field(records: list[StepRecord]) -> None:
    assert records[0].cosine is None and records[1].cosine is not None
    assert records[0].sharpness is not None and records[1].sharpness is None
    assert records[0].segment_loss_se is not None


def test_flat_metrics_keeps_every_number_by_name(records: list[StepRecord]) -> None:
    for record in records:
        metrics = flat_metrics(record, prefix="walk/")
        for name in RECORD_FIELDS:
            value = getattr(record, name)
            if name in NOT_LOGGED or value is None:
                assert not any(key == f"walk/{name}" or key.startswith(f"walk/{name}/") for key in metrics), name
            elif name in PER_INDEX_FIELDS:
                assert [metrics[f"walk/{name}/{i}"] for i in range(len(value))] == list(value)
                assert f"walk/{name}/{len(value)}" not in metrics
            elif name == "barrier_test":
                indicators = {o: metrics[f"walk/barrier_test/{o.replace(' ', '_')}"] for o in BARRIER_TEST_OUTCOMES}
                assert indicators == {o: float(o == value) for o in BARRIER_TEST_OUTCOMES}
            else:
                assert metrics[f"walk/{name}"] == float(value), name
        assert all(type(value) is float for value in metrics.values())


def test_segment_losses_by_index_are_the_points_of_the_alpha_grid(records: list[StepRecord]) -> None:
    record = records[0]
    metrics = flat_metrics(record)
    assert len(record.segment_alphas) == len(record.segment_losses) == 5  # K = 4, plus α = 1
    assert metrics["segment_losses/0"] == record.loss_start and metrics["segment_losses/4"] == record.loss_end


def test_csv_round_trip_reads_back_every_value_exactly(records: list[StepRecord], tmp_path: Path) -> None:
    path = tmp_path / "walk" / "metrics.csv"
    with CsvSink(path) as sink:
        for record in records:
            sink(record)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == [r.step for r in records]
    for row, record in zip(rows, records, strict=True):
        expected = flat_metrics(record)
        assert {name: float(text) for name, text in row.items() if name != "step" and text} == expected
        assert all(row[name] == "" for name in row if name != "step" and name not in expected)
    assert read_csv_metrics(path) == [(r.step, flat_metrics(r)) for r in records]


def test_csv_header_widens_when_a_new_metric_appears(records: list[StepRecord], tmp_path: Path) -> None:
    """Step 0 has no cosine: the column arrives with step 1 and the file stays one table."""
    path = tmp_path / "metrics.csv"
    sink = CsvSink(path)
    sink(records[0])
    assert "cosine" not in path.read_text().splitlines()[0].split(",")
    sink(records[1])
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert "cosine" in header and all(len(row) == len(header) for row in rows)
    assert rows[0][header.index("cosine")] == ""
    assert not path.with_name("metrics.csv.tmp").exists()


def test_a_tracker_takes_a_sink_as_it_takes_any_callable(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    model = mlp(0)
    inputs, targets = classification_data(0, 16)
    sink = CsvSink(path)
    tracker = WalkTracker(model, MeasurementSet(inputs, targets), num_alphas=2, sinks=[sink])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tracker.attach(optimizer)
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(inputs), targets).backward()
    optimizer.step()
    sink.close()
    assert read_csv_metrics(path) == [(0, flat_metrics(tracker.records[0]))]


@pytest.mark.parametrize("spec", ["csv", "csv:", "parquet:out.parquet", "tensorboard"])
def test_a_log_to_spec_that_names_no_sink_is_refused(spec: str) -> None:
    with pytest.raises(SinkSpecError, match="csv:FILE, tensorboard:DIR, mlflow:URI"):
        open_sink(spec)


def test_open_sink_makes_a_csv_sink(tmp_path: Path) -> None:
    sink = open_sink(f"csv:{tmp_path / 'm.csv'}")
    assert isinstance(sink, CsvSink) and sink.path == tmp_path / "m.csv"


def test_a_missing_extra_names_the_extra_to_install() -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'sgdwalk\[tensorboard\]'") as caught:
        require("sgdwalk_no_such_library.sub", extra="tensorboard", needed_by="TensorBoardSink")
    assert isinstance(caught.value, ImportError)
    assert "'sgdwalk_no_such_library'" in str(caught.value)


@pytest.mark.slow  # a fresh interpreter importing torch and every integration module: seconds
def test_without_the_optional_libraries_sgdwalk_imports_and_each_integration_names_its_extra() -> None:
    """In a fresh interpreter where tensorboard, mlflow, lightning and transformers cannot be imported."""
    code = """
import sys
for name in ("tensorboard", "mlflow", "lightning", "transformers"):
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError
import sgdwalk, sgdwalk.integrations.lightning_callback as lightning_callback
import sgdwalk.integrations.huggingface_callback as huggingface_callback
from sgdwalk.integrations.optional import MissingExtraError
from sgdwalk.integrations.tensorboard_sink import TensorBoardSink
from sgdwalk.integrations.mlflow_sink import MlflowSink
for make in (lambda: TensorBoardSink("tb"), lambda: MlflowSink("sqlite:///m.db"),
             lambda: lightning_callback.LightningWalkCallback(None),
             lambda: huggingface_callback.HuggingFaceWalkCallback(None)):
    try:
        make()
    except MissingExtraError as error:
        print(error)
"""
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert completed.stdout.splitlines() == [
        "TensorBoardSink needs the 'tensorboard' package: pip install 'sgdwalk[tensorboard]'",
        "MlflowSink needs the 'mlflow' package: pip install 'sgdwalk[mlflow]'",
        "LightningWalkCallback needs the 'lightning' package: pip install 'sgdwalk[lightning]'",
        "HuggingFaceWalkCallback needs the 'transformers' package: pip install 'sgdwalk[transformers]'",
    ]
