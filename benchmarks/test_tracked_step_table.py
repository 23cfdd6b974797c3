"""What a tracked step costs, by model: time and extra peak memory, exact and targeted.

For each model, three fresh interpreters of the same shape (the same imports, model, data,
measurement set, optimizer and steps) train by SGD on batches of ``TRAIN_BATCH``:

- untracked: the plain loop;
- exact: the same loop with a ``WalkTracker`` measuring every step on the whole set;
- targeted: the same, precision-targeted with the defaults (``PrecisionTarget()``).

Each first takes ``WARMUP_STEPS`` untracked steps (kernels load, the allocator fills), then
``TRAIN_STEPS`` timed untracked steps (their median is the training step), then
``TIMED_STEPS`` steps of its variant, of which the last is timed (the first tracked step also
measures its own α = 0; later ones carry it over). Times are the process's CPU time: with one
thread that is the wall time on an idle machine, and on a shared one it leaves out the waits
for other work (not the contention for caches and memory, so the figures stay upper bounds).
A tracked step's cost is its time over the training step of the same process. The extra peak
memory is the process's peak resident size (``ru_maxrss``) tracked minus untracked, as in
``test_tracked_step_memory.py``.

Setting: K = 10, a measurement set of ``MEASUREMENT_SIZE`` samples in chunks of
``CHUNK_SIZE``, batch norm in "train" mode, no sharpness, one intra-op thread; the image
models on Fashion-MNIST (skipped without it), the transformer on random tokens whose label
is a rule of the first token. The set holds 1,024 samples, not 256: the targeted mode's
first look is ``DEFAULT_FIRST_LOOK`` = 512 samples, so on a smaller set it reads everything
and costs what exact does. The measurement's time grows with the samples read; its memory
does not (one chunk at a time).

Models: the paper's MLP with batch norm (28×28), the conv net at half width (28×28, as the
real tier runs it), VGG-11 at a quarter width (32×32, as the nets tier runs it),
torchvision's ResNet-18 (10 classes, random weights, 32×32×3) and the small transformer of
the memory benchmark (16 tokens).
Run: ``pytest benchmarks/test_tracked_step_table.py --benchmark-only`` (three to five
minutes); each model's row prints beside its ratios at the end of the session, and the
whole table with ``-s``.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from pytest_benchmark.fixture import BenchmarkFixture
from torch import nn

from benchmarks.conftest import EXTRAS, MEDIANS, in_fresh_process
from benchmarks.test_tracked_step_memory import SmallTransformer
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.sampling import PrecisionTarget
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.training.data import find_dataset

MODELS = ("mlp", "convnet", "vgg11", "resnet18", "transformer")
VARIANTS = ("untracked", "exact", "targeted")
NUM_ALPHAS = 10
# Large enough that the targeted mode can stop before the end (its first look is 512).
MEASUREMENT_SIZE = 1024
CHUNK_SIZE = 256
# The default walk's batch is 100; a power of two near it.
TRAIN_BATCH = 128
LEARNING_RATE = 0.01
# One untracked step before the timed ones, so that no variant pays for loading kernels.
WARMUP_STEPS = 1
# Timed untracked steps before the variant's; their median is the training step (one alone
# moved by a quarter between processes on a shared machine).
TRAIN_STEPS = 3
# The variant's steps; the last is timed (the first tracked one measures its own α = 0, later
# ones carry it over). Two keep the whole table near four minutes.
TIMED_STEPS = 2

MIB = 1024.0 * 1024.0
GROUP = "tracked-step-table"


def build(name: str, samples: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model ``name`` (seeded) with ``samples`` inputs and labels of its shape: the first
    Fashion-MNIST training images (zero-padded to 32 for VGG-11 and ResNet-18, the grey channel
    repeated for ResNet-18's three), or for the transformer random tokens labelled by a rule."""
    from sgdwalk.training.data import load_tensors
    from sgdwalk.training.models import build_model

    torch.manual_seed(0)
    if name == "transformer":
        model = SmallTransformer(vocabulary=1000, length=16, width=256, layers=4, classes=10)
        tokens = torch.randint(0, 1000, (samples, 16))
        # A rule the model can learn, so that a step's change in loss is signal, not the noise
        # of random labels (on which the targeted mode cannot decide and reads the whole set).
        return model, tokens, tokens[:, 0] % 10
    images = load_tensors("fashion-mnist", subset=samples, pad_to=32 if name in ("vgg11", "resnet18") else None)
    if name == "mlp":
        return build_model("mlp", 1, 28, 10), images.inputs, images.targets
    if name == "convnet":
        return build_model("convnet", 1, 28, 10, 0.5), images.inputs, images.targets
    if name == "vgg11":
        return build_model("vgg11", 1, 32, 10, 0.25), images.inputs, images.targets
    if name == "resnet18":
        from torchvision.models import resnet18

        return resnet18(num_classes=10), images.inputs.expand(-1, 3, -1, -1).contiguous(), images.targets
    raise ValueError(f"unknown model {name!r}")


def child(name: str, variant: str) -> None:
    """One fresh process's run of ``variant`` on model ``name``; prints a JSON line."""
    torch.set_num_threads(1)
    tracked_from = WARMUP_STEPS + TRAIN_STEPS  # after the warm-up and the timed training steps
    steps = tracked_from + TIMED_STEPS
    model, inputs, targets = build(name, MEASUREMENT_SIZE + steps * TRAIN_BATCH)
    measurement = MeasurementSet(inputs[:MEASUREMENT_SIZE], targets[:MEASUREMENT_SIZE], chunk_size=CHUNK_SIZE)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    model.train()
    tracker: WalkTracker | None = None
    seconds: list[float] = []
    for step in range(steps):
        if step == tracked_from and variant != "untracked":
            precision = PrecisionTarget() if variant == "targeted" else None
            tracker = WalkTracker(model, measurement, num_alphas=NUM_ALPHAS, precision=precision, start_step=step)
        batch = slice(MEASUREMENT_SIZE + step * TRAIN_BATCH, MEASUREMENT_SIZE + (step + 1) * TRAIN_BATCH)
        began = time.process_time()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs[batch]), targets[batch])
        loss.backward()
        if tracker is None:
            optimizer.step()
        else:
            with tracker.step(minibatch_loss=loss):
                optimizer.step()
        seconds.append(time.process_time() - began)
    records = [] if tracker is None else tracker.close()
    timed = [record.samples or 0 for record in records if record.step == steps - 1]
    result = {
        "parameters": float(sum(parameter.numel() for parameter in model.parameters())),
        "train_seconds": statistics.median(seconds[WARMUP_STEPS:tracked_from]),
        "step_seconds": seconds[-1],
        "peak_bytes": 1024.0 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "samples_read": float(timed[0]) if timed else 0.0,
    }
    print(json.dumps(result))


def cost_in_training_steps(run: dict[str, float]) -> float:
    """A tracked step's time over the training step timed in the same process."""
    return run["step_seconds"] / run["train_seconds"]


def table_row(name: str, runs: dict[str, dict[str, float]]) -> str:
    """One Markdown row: model | parameters | train step | exact (×) | targeted (×, samples) | extra peak."""
    untracked = runs["untracked"]
    cells = [name, f"{untracked['parameters'] / 1e6:.2f}M", f"{untracked['train_seconds'] * 1e3:.0f}"]
    for variant in ("exact", "targeted"):
        tracked = runs[variant]
        cells.append(f"{tracked['step_seconds'] * 1e3:.0f} ({cost_in_training_steps(tracked):.1f}x)")
    cells.append(f"{runs['targeted']['samples_read']:.0f}")
    extras = [(runs[variant]["peak_bytes"] - untracked["peak_bytes"]) / MIB for variant in ("exact", "targeted")]
    cells.append(" / ".join(f"{extra:.0f}" for extra in extras))
    return "| " + " | ".join(cells) + " |"


TABLE_HEADER = (
    "| model | params | train step ms | tracked exact ms (x train step) | tracked targeted ms (x) | targeted samples read "
    "| extra peak MiB exact / targeted |"
)
TABLE_RULE = "|---|---|---|---|---|---|---|"


@pytest.fixture(scope="module")
def table_rows() -> Iterator[dict[str, str]]:
    """The rows the tests fill (model -> row); the whole table prints once they have run."""
    rows: dict[str, str] = {}
    yield rows
    print("\n" + "\n".join([TABLE_HEADER, TABLE_RULE, *(rows[name] for name in MODELS if name in rows)]))


@pytest.mark.parametrize("name", MODELS)
def test_tracked_step_cost_by_model(benchmark: BenchmarkFixture, table_rows: dict[str, str], name: str) -> None:
    if name != "transformer" and find_dataset("fashion-mnist") is None:
        pytest.skip("needs Fashion-MNIST (Debian's dataset-fashion-mnist, or sgdwalk walk --download)")
    runs: dict[str, dict[str, float]] = {}

    def one_round() -> None:
        for variant in VARIANTS:
            runs[variant] = in_fresh_process("benchmarks.test_tracked_step_table", name, variant)

    benchmark.pedantic(one_round, rounds=1, warmup_rounds=0)
    group = f"{GROUP}-{name}"
    MEDIANS[group]["reference"] = runs["untracked"]["train_seconds"]
    for variant in ("exact", "targeted"):
        MEDIANS[group][variant] = runs[variant]["step_seconds"]
        extra = (runs[variant]["peak_bytes"] - runs["untracked"]["peak_bytes"]) / MIB
        benchmark.extra_info[f"{variant}_seconds_per_step"] = runs[variant]["step_seconds"]
        benchmark.extra_info[f"{variant}_cost_in_training_steps"] = cost_in_training_steps(runs[variant])
        benchmark.extra_info[f"{variant}_extra_peak_mib"] = extra
    benchmark.extra_info.update(
        parameters=runs["untracked"]["parameters"],
        train_seconds_per_step=runs["untracked"]["train_seconds"],
        targeted_samples_read=runs["targeted"]["samples_read"],
    )
    row = table_row(name, runs)
    EXTRAS[group]["table row"] = row
    table_rows[name] = row
    # Independent of the figures: a tracked step measures K points on the set, so it cannot
    # be cheaper than the training step it wraps, and the targeted mode reads at most the set.
    assert cost_in_training_steps(runs["exact"]) > 1.0, row
    assert 0 < runs["targeted"]["samples_read"] <= MEASUREMENT_SIZE, row
