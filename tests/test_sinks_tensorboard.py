"""The TensorBoard sink's round trip: write records, read the event file back with
TensorBoard's own ``EventAccumulator``, compare.

TensorBoard stores a scalar as a 32-bit float, so each value must read back as exactly its
float32 rounding (no tolerance: the rounding is the format's, and it is exact).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sgdwalk.instrument.record import StepRecord
from sgdwalk.integrations.metrics import flat_metrics
from sgdwalk.integrations.sink_spec import open_sink
from sgdwalk.integrations.tensorboard_sink import DEFAULT_PREFIX, TensorBoardSink
from tests.integration_helpers import optional_library, walk_records

optional_library("tensorboard", "tensorboard")


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # 0: keep every event (the default keeps a sample of 10,000 scalars per tag).
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def expected_scalars(records: list[StepRecord], prefix: str) -> dict[str, list[tuple[int, float]]]:
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for name, value in flat_metrics(record, prefix).items():
            expected.setdefault(name, []).append((record.step, float(np.float32(value))))
    return expected


@pytest.fixture(scope="module")
def records() -> list[StepRecord]:
    return walk_records()


def test_tensorboard_round_trip(records: list[StepRecord], tmp_path: Path) -> None:
    with TensorBoardSink(tmp_path / "tb") as sink:
        for record in records:
            sink(record)
    scalars = read_scalars(tmp_path / "tb")
    assert scalars == expected_scalars(records, DEFAULT_PREFIX)
    assert "sgdwalk/cosine" in scalars and [step for step, _ in scalars["sgdwalk/cosine"]] == [1, 2, 3, 4]


def test_a_writer_of_the_users_is_flushed_and_left_open(records: list[StepRecord], tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    writer.add_scalar("train/loss", 1.5, global_step=0)
    sink = TensorBoardSink(writer, prefix="walk/")
    sink(records[0])
    sink.close()
    writer.add_scalar("train/loss", 1.25, global_step=1)  # still open
    writer.close()
    scalars = read_scalars(tmp_path / "tb")
    assert scalars.pop("train/loss") == [(0, 1.5), (1, 1.25)]
    assert scalars == expected_scalars(records[:1], "walk/")


def test_log_to_tensorboard_opens_this_sink(tmp_path: Path) -> None:
    sink = open_sink(f"tensorboard:{tmp_path / 'tb'}")
    assert isinstance(sink, TensorBoardSink)
    sink.close()


def read_layout(log_dir: Path) -> dict[str, dict[str, list[str]]]:
    """The Custom Scalars layout in the event file, read back through TensorBoard's own proto."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    accumulator = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    (event,) = accumulator.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    return {
        category.title: {chart.title: list(chart.multiline.tag) for chart in category.chart}
        for category in layout.category
    }


def test_the_segment_is_one_chart_of_its_grid_points(records: list[StepRecord], tmp_path: Path) -> None:
    import re

    with TensorBoardSink(tmp_path / "tb") as sink:
        for record in records:
            sink(record)
    (charts,) = read_layout(tmp_path / "tb").values()
    scalars = read_scalars(tmp_path / "tb")
    drawn = {
        title: sorted(t for t in scalars if any(re.search(p, t) for p in patterns))
        for title, patterns in charts.items()
    }
    points = len(records[0].segment_losses)
    assert drawn["segment: loss at each grid point α"] == sorted(f"sgdwalk/segment_losses/{i}" for i in range(points))
    assert drawn["heights above the floor"] == ["sgdwalk/height_end", "sgdwalk/height_start"]
    assert drawn["consecutive gradients and updates: cosine"] == ["sgdwalk/cosine", "sgdwalk/update_cosine"]


def test_a_writer_of_the_users_keeps_its_own_layout(records: list[StepRecord], tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    with TensorBoardSink(writer) as sink:
        sink(records[0])
    writer.close()
    with pytest.raises(KeyError):
        read_layout(tmp_path / "tb")
