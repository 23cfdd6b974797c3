"""Host reads and dispatched operations in the hot loops, counted on the CPU.

On CUDA every read of a device value by the host (``float(t)``, ``t.item()``, ``t.tolist()``,
``bool(t)``) waits for the device to finish its queue, and every dispatched operation is a
kernel launch. A CPU has neither cost, but the calls are the same ones, so they are counted
here: an unmeasured SGD step reads nothing (its loss waits on the device for the next look,
``runner.LOSS_LOOK_EVERY``), and a segment point is built in a few calls whatever the
number of parameter tensors. The records are the ones a run reading every loss at its step
makes, bit for bit.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sgdwalk.instrument import measurement
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, ParameterLayout, SegmentPoints, interpolate
from sgdwalk.runs import runner
from sgdwalk.runs.runner import WalkResult, run_walk
from sgdwalk.training.models import build_model
from tests.test_runner import TRAIN_SIZE, tiny_config, tiny_data, without_timing

# The Tensor methods through which the host reads a tensor's values.
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextmanager
def counted_host_reads() -> Iterator[collections.Counter[str]]:
    """Counts each call of the ``HOST_READS`` methods of any tensor inside the block."""
    counts: collections.Counter[str] = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def counting(name: str) -> Callable[..., Any]:
        original = originals[name]

        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(self, *args, **kwargs)

        return read

    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, counting(name))
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def host_reads_of_a_run(batch_size: int) -> int:
    """Reads of a 2-epoch run measuring no step (so every SGD step is an unmeasured one)."""
    config = tiny_config(batch_size=batch_size, epochs=2, track_epochs=(), measurement_size=16)
    with counted_host_reads() as counts:
        run_walk(config, data=tiny_data())
    return sum(counts.values())


def test_unmeasured_sgd_steps_read_nothing_from_the_device() -> None:
    # 2 and 16 steps per epoch: the same evaluations and looks (each epoch's end), 28 more steps.
    few, many = host_reads_of_a_run(TRAIN_SIZE // 2), host_reads_of_a_run(TRAIN_SIZE // 16)
    # Reading each step's loss at its step made this 28 (one read per step).
    assert many - few == 0, f"{many - few} host reads for 28 more SGD steps"


def _every_loss_read_at_its_step(self: Any, step: int, pending: Any) -> bool:
    return True


def result_fields(result: WalkResult) -> tuple[Any, ...]:
    return ([r.as_dict() for r in result.records], without_timing(result.history), result.divergence, result.status)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"track_epochs": (), "track_every": 3, "epochs": 4},
        # Diverges at step 2, unmeasured: found at the epoch's look, named by its own step.
        {"lr": 80.0, "track_epochs": (3,)},
        {"lr": 80.0, "track_epochs": (), "track_every": 3},
        {"lr": 1e30, "track_epochs": (2,)},
        {"optimizer": "gd", "epochs": 5, "track_epochs": (1, 4)},
    ],
)
@pytest.mark.parametrize("look_every", [1, 2, 64])
def test_losses_read_at_looks_make_the_records_of_losses_read_at_every_step(
    changes: dict[str, Any], look_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(**changes)
    with monkeypatch.context() as patch:
        patch.setattr(runner._WalkRun, "_reads_loss_now", _every_loss_read_at_its_step)
        every_step = run_walk(config, data=tiny_data())
    monkeypatch.setattr(runner, "LOSS_LOOK_EVERY", look_every)
    assert result_fields(run_walk(config, data=tiny_data())) == result_fields(every_step)
    if "lr" in changes:
        assert every_step.divergence is not None and "step" in every_step.divergence


class _CountedOperations(TorchDispatchMode):
    """Counts the operations dispatched inside the block (on CUDA, each a kernel launch or more)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("channels_last", "most"), [(False, 3), (True, 4)])
def test_a_resnet56_segment_point_is_built_in_a_few_operations(
    channels_last: bool, most: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ResNet-56 has 170 parameter tensors: one run of them in one flat vector takes three
    operations (the CUDA path); with its 57 conv weights in channels-last order (the CPU's)
    four calls over all pieces (it took 327 operations one piece at a time)."""
    model = build_model("resnet56", 3, 32, 10, 0.25).eval()
    start = flat_parameters(model)
    end = start + 1e-3
    monkeypatch.setattr(measurement, "_prefers_channels_last", lambda model, point: channels_last)
    inputs, targets = torch.randn(2, 3, 32, 32), torch.zeros(2, dtype=torch.long)
    points = SegmentPoints(model, start, end, (0.0, 0.5, 1.0), MeasurementSet(inputs, targets, chunk_size=2))
    with _CountedOperations() as counted:
        built = points.parameters(1)
    assert counted.count <= most
    # The point itself, bitwise the vector ``interpolate`` makes in one piece.
    expected = ParameterLayout.of(model).unflatten(interpolate(start, end, 0.5))
    for name, value in built.items():
        assert torch.equal(value, expected[name]), name
