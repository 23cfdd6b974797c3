"""What each integration costs per tracked step, beside the plain loop, in one session.

Setting: a small MLP (100-64-10) on teacher-labelled Gaussian inputs (no data set needed),
batch 32, every one of ``STEPS`` steps tracked on a fixed set of 256 samples, K = 10. Small on
purpose: what an integration adds per record (a hook call, a file write, a database insert)
does not grow with the network, and on a large one it drowns in the measurement's own time
(on the default walk's MLP 784-500-350-10 with 1,000 samples a tracked step took ~400 ms
here, with round-to-round noise of a second). Each method runs the same seeded walk; a round
is one walk.

- reference: the plain loop, untracked;
- with-block: ``with tracker.step(...)`` around ``optimizer.step()``;
- attach: ``tracker.attach(optimizer)`` and ``tracker.note_loss``;
- attach+csv / attach+tensorboard / attach+mlflow: attach, each record also written by a sink
  (MLflow to a local SQLite store), the sink closed (flushed) inside the round;
- lightning / lightning+callback: ``Trainer.fit`` without and with ``LightningWalkCallback``
  (each fit pays Lightning's fixed start-up, so the callback's cost is the difference).

Per method, ``extra_info`` holds its ratio to the reference and its cost per tracked step in
milliseconds over the method it adds to (``baseline``). No speed goal is set by the issue;
asserted is what must hold whatever the machine: the ways agree on the records.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

from benchmarks.conftest import EXTRAS, MEDIANS, remember
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.integrations.metrics import MetricsSink

GROUP = "integration-cost-per-tracked-step"
STEPS, BATCH, MEASUREMENT_SIZE, FEATURES, CLASSES, LR = 50, 32, 256, 100, 10, 0.1
# Rounds per method: each is a fresh walk (a tracker measures one walk), set up untimed.
ROUNDS = 5
# method -> the method it adds to (its cost per tracked step is measured over that one).
BASELINES = {
    "with-block": "reference",
    "attach": "reference",
    "attach+csv": "attach",
    "attach+tensorboard": "attach",
    "attach+mlflow": "attach",
    "lightning+callback": "lightning",
}
# The records of the first tracked method to run: every other way must give the same.
RECORDS: dict[str, list[StepRecord]] = {}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(STEPS * BATCH, FEATURES, generator=generator)
    teacher = torch.randn(FEATURES, CLASSES, generator=generator)
    return inputs, (inputs @ teacher).argmax(dim=1)


INPUTS, TARGETS = _data()


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, CLASSES))


def _measurement() -> MeasurementSet:
    return MeasurementSet(INPUTS[:MEASUREMENT_SIZE], TARGETS[:MEASUREMENT_SIZE], chunk_size=MEASUREMENT_SIZE)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(INPUTS[i : i + BATCH], TARGETS[i : i + BATCH]) for i in range(0, STEPS * BATCH, BATCH)]


def _loop(model: nn.Module, optimizer: torch.optim.Optimizer, step: Callable[[torch.Tensor], None]) -> None:
    for x, y in _batches():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        step(loss)


def _sink(kind: str, folder: Path) -> MetricsSink:
    from sgdwalk.integrations.sink_spec import open_sink

    where = {"csv": str(folder / "walk.csv"), "tensorboard": str(folder / "tb"), "mlflow": f"sqlite:///{folder}/m.db"}
    return open_sink(f"{kind}:{where[kind]}")


def _plain_round(method: str, folder: Path) -> Callable[[], list[StepRecord]]:
    """The round of a plain-loop method, set up (model, tracker, sink made; not timed)."""
    model = _network()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    if method == "reference":

        def untracked() -> list[StepRecord]:
            _loop(model, optimizer, lambda loss: optimizer.step())
            return []

        return untracked
    sink = _sink(method.partition("+")[2], folder) if "+" in method else None
    tracker = WalkTracker(model, _measurement(), sinks=[] if sink is None else [sink])

    def with_block(loss: torch.Tensor) -> None:
        with tracker.step(minibatch_loss=loss, lr=LR):
            optimizer.step()

    def attached(loss: torch.Tensor) -> None:
        tracker.note_loss(loss)
        optimizer.step()

    def walk() -> list[StepRecord]:
        if method == "with-block":
            _loop(model, optimizer, with_block)
        else:
            with tracker.attach(optimizer):
                _loop(model, optimizer, attached)
        if sink is not None:
            sink.close()
        return tracker.close()

    return walk


def _lightning_round(method: str) -> Callable[[], list[StepRecord]]:
    import lightning
    from torch.utils.data import DataLoader, TensorDataset

    from sgdwalk.integrations.lightning_callback import LightningWalkCallback

    class Classifier(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _network()

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.net(inputs)

        def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
            return F.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=LR)

    callback = LightningWalkCallback(_measurement()) if method == "lightning+callback" else None
    trainer = lightning.Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[] if callback is None else [callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = DataLoader(TensorDataset(INPUTS, TARGETS), batch_size=BATCH, shuffle=False)
    module = Classifier()

    def walk() -> list[StepRecord]:
        with warnings.catch_warnings():
            # Lightning 2.6's combined loader uses torch's deprecated pytree LeafSpec (inside Lightning).
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            trainer.fit(module, loader)
        return [] if callback is None or callback.tracker is None else callback.tracker.close()

    return walk


@pytest.mark.parametrize(
    "method",
    [
        "reference",
        "with-block",
        "attach",
        "attach+csv",
        "attach+tensorboard",
        "attach+mlflow",
        "lightning",
        "lightning+callback",
    ],
)
def test_integration_cost(benchmark: BenchmarkFixture, method: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    extra = {"attach+tensorboard": "tensorboard", "attach+mlflow": "mlflow", "lightning": "lightning"}
    library = extra.get(method, "lightning" if method.startswith("lightning") else None)
    if library is not None:
        pytest.importorskip(library, reason=f"needs the {library!r} extra")
    rounds: list[list[StepRecord]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        folder = tmp_path_factory.mktemp(method.replace("+", "-"))
        return (_lightning_round(method) if method.startswith("lightning") else _plain_round(method, folder),), {}

    def run(walk: Callable[[], list[StepRecord]]) -> None:
        rounds.append(walk())

    with warnings.catch_warnings():
        # MLflow 3.17's tracking store uses SQLAlchemy 2.1's deprecated `noload` (inside MLflow).
        warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated")
        benchmark.pedantic(run, setup=setup, rounds=ROUNDS, warmup_rounds=0)
    benchmark.group = GROUP
    remember(benchmark, GROUP, method)
    records = rounds[-1]
    if method not in ("reference", "lightning"):
        assert [r.step for r in records] == list(range(STEPS))
        RECORDS.setdefault("first", records)
        assert records == RECORDS["first"], f"{method}: the records differ from the other ways'"
    baseline = BASELINES.get(method)
    if baseline is not None and baseline in MEDIANS[GROUP]:
        cost_ms = (MEDIANS[GROUP][method] - MEDIANS[GROUP][baseline]) / STEPS * 1e3
        benchmark.extra_info.update(baseline=baseline, cost_per_tracked_step_ms=cost_ms)
        EXTRAS[GROUP][f"{method}: cost"] = f"{cost_ms:+.2f} ms per tracked step over {baseline}"
