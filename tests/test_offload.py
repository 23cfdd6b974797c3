"""The tracker's vectors kept in host memory or on disk (``offload``) give the records kept
beside the model, bit for bit, in the loops a researcher writes.

Each test trains the same model twice or three times from the same seed: the vectors beside
the model (the reference), in host memory, in temporary files. The transfer block and the
geometry's widening block are made small, so that every vector here spans many blocks and
the block-by-block paths (the segment's points built from a kept θ_t, the cosines and
distances over kept vectors, the update formed block by block) are the ones tried.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdwalk.instrument import geometry, offload
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet
from sgdwalk.instrument.offload import KeptVector, VectorStore, checkpoint_copy
from sgdwalk.instrument.offload_targets import check_offload
from sgdwalk.instrument.sampling import PrecisionTarget
from sgdwalk.instrument.schedule import every_kth
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.training.models import build_model

STEPS, BATCH, MEASURE_SIZE = 5, 16, 32
# Small blocks (the defaults are 1 Mi entries): the models here have 10^4-10^5 parameters, so
# each vector spans tens of blocks, and the blocks' ends fall inside parameters.
TRANSFER_BLOCK, WIDENING_BLOCK = 1000, 4096
TARGETS = (None, "host", "disk")


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "TRANSFER_BLOCK", TRANSFER_BLOCK)
    monkeypatch.setattr(geometry, "_WIDENING_BLOCK", WIDENING_BLOCK)


def _images(channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    count = MEASURE_SIZE + STEPS * BATCH
    return torch.randn(count, channels, size, size, generator=generator), torch.randint(
        0, 10, (count,), generator=generator
    )


def _minibatch_backward(
    model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor, targets: torch.Tensor, step: int
) -> torch.Tensor:
    """Step ``step``'s minibatch (after the measurement set): its loss, its gradients in the model."""
    batch = slice(MEASURE_SIZE + step * BATCH, MEASURE_SIZE + (step + 1) * BATCH)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(inputs[batch]), targets[batch])
    loss.backward()
    return loss


def _walk(
    arch: str,
    target: str | None,
    *,
    optimizer_name: str = "sgd",
    tracker_options: dict[str, object] | None = None,
    clip: float | None = None,
) -> tuple[list[dict[str, object]], torch.Tensor]:
    """Records and final parameters of a tracked run of ``arch``, vectors kept in ``target``."""
    channels, size = (1, 28) if arch == "mlp" else (3, 8)
    inputs, targets = _images(channels, size)
    torch.manual_seed(0)
    model = build_model(arch, channels, size, 10, 0.25 if arch != "mlp" else 0.1)
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        if optimizer_name == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    )
    measurement = MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE], chunk_size=12)
    tracker = WalkTracker(model, measurement, num_alphas=4, offload=check_offload(target), **(tracker_options or {}))  # type: ignore[arg-type]
    model.train()
    for step in range(STEPS):
        loss = _minibatch_backward(model, optimizer, inputs, targets, step)
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        with tracker.step(minibatch_loss=loss, optimizer=optimizer):
            optimizer.step()
    return [record.as_dict() for record in tracker.close()], flat_parameters(model)


def _assert_same_walks(arch: str, **options: object) -> None:
    reference, reference_end = _walk(arch, None, **options)  # type: ignore[arg-type]
    for target in ("host", "disk"):
        records, end = _walk(arch, target, **options)  # type: ignore[arg-type]
        assert torch.equal(end, reference_end), f"{target}: offloading moved the trajectory"
        assert records == reference, f"{target}: records differ from those kept beside the model"


# VGG-11 (its many conv weights, each read back whole) in the slow tests: a few seconds.
@pytest.mark.parametrize("arch", ["mlp", "convnet", pytest.param("vgg11", marks=pytest.mark.slow)])
def test_offloaded_records_are_bitwise_those_kept_beside_the_model(arch: str) -> None:
    # The MLP takes the affine-input shortcut (its first layer at the two ends only), the conv
    # nets the channels-last path on the CPU (their conv weights reordered one by one).
    _assert_same_walks(arch)


@pytest.mark.parametrize("bn_mode", ["eval", "recompute"])
def test_offloaded_records_in_each_batchnorm_mode(bn_mode: str) -> None:
    _assert_same_walks("convnet", tracker_options={"bn_mode": bn_mode})


def test_offloaded_records_with_gaps_targeting_clipping_and_adamw() -> None:
    # A schedule with gaps (steps handed on but not measured), precision-targeted sampling,
    # clipping and decoupled decay: every way a kept vector is made, replaced and read.
    _assert_same_walks(
        "mlp",
        optimizer_name="adamw",
        clip=0.5,
        tracker_options={"schedule": every_kth(2), "precision": PrecisionTarget(height_relative_se=0.5)},
    )


@pytest.mark.slow  # three walks with Lanczos and Hutch++: about ten seconds
def test_offloaded_sharpness_and_quantities_evaluate_at_the_next_iterate() -> None:
    # A loose tolerance: the estimates only need to be equal, not exact (and they are cheaper).
    _assert_same_walks(
        "mlp", tracker_options={"sharpness_every": 2, "sharpness_tolerance": 1e-2, "hessian_trace_every": 4}
    )


# The CPU here; a CUDA card where there is one (scripts/gpu-smoke.sh runs these on a lent card:
# "host" there is pinned memory, the blocks moved to the device).
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["mlp", "convnet"])
def test_the_three_stores_measuring_the_same_steps_record_the_same(
    arch: str, device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three trackers side by side on one training run (none of them touches the model), so
    that a device's nondeterministic training cannot tell them apart: only their stores differ."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    channels, size = (1, 28) if arch == "mlp" else (3, 8)
    inputs, targets = (tensor.to(device) for tensor in _images(channels, size))
    torch.manual_seed(0)
    model = build_model(arch, channels, size, 10, 0.25 if arch != "mlp" else 0.1).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    measurement = MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE], chunk_size=12)
    trackers = [WalkTracker(model, measurement, num_alphas=4, offload=check_offload(target)) for target in TARGETS]
    model.train()
    for step in range(STEPS):
        loss = _minibatch_backward(model, optimizer, inputs, targets, step)
        for tracker in trackers:
            tracker.before_step(minibatch_loss=loss, optimizer=optimizer)
        optimizer.step()
        for tracker in trackers:
            tracker.after_step()
    reference, *offloaded = ([record.as_dict() for record in tracker.close()] for tracker in trackers)
    assert len(reference) == STEPS
    for target, records in zip(TARGETS[1:], offloaded, strict=True):
        assert records == reference, f"{target} on {device}: records differ from those kept beside the model"


def test_an_offloaded_checkpoint_resumes_as_one_kept_beside_the_model(tmp_path: Path) -> None:
    """A run checkpointed halfway under one store and resumed under another records what an
    uninterrupted run records."""
    inputs, targets = _images(1, 28)
    measurement = MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE])

    def run(stores: tuple[str | None, str | None]) -> list[dict[str, object]]:
        torch.manual_seed(0)
        model = build_model("mlp", 1, 28, 10, 0.1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tracker = WalkTracker(model, measurement, num_alphas=3, offload=check_offload(stores[0]))
        for step in range(STEPS):
            if step == 2:
                torch.save(tracker.state_dict(), tmp_path / "tracker.pt")
                tracker = WalkTracker(model, measurement, num_alphas=3, offload=check_offload(stores[1]))
                tracker.load_state_dict(torch.load(tmp_path / "tracker.pt", weights_only=True))
            loss = _minibatch_backward(model, optimizer, inputs, targets, step)
            with tracker.step(minibatch_loss=loss, lr=0.1):
                optimizer.step()
        return [record.as_dict() for record in tracker.close()]

    reference = run((None, None))
    assert run(("disk", "host")) == reference
    assert run((None, "disk")) == reference


def test_a_disk_kept_vector_reads_back_what_was_written_and_its_file_goes_with_it(tmp_path: Path) -> None:
    vector = torch.randn(2 * TRANSFER_BLOCK + 17, generator=torch.Generator().manual_seed(5))
    kept = VectorStore("disk", tmp_path).keep(vector, dtype=vector.dtype, device=vector.device)
    assert isinstance(kept, KeptVector)
    assert torch.equal(checkpoint_copy(kept), vector)
    assert torch.equal(kept.block(TRANSFER_BLOCK - 3, 40), vector[TRANSFER_BLOCK - 3 : TRANSFER_BLOCK + 37])
    # The file is unnamed: nothing is left in the folder, and its descriptor closes with the vector.
    assert os.listdir(tmp_path) == []
    halves = VectorStore("host").keep(vector.to(torch.bfloat16), dtype=torch.bfloat16, device=vector.device)
    assert torch.equal(checkpoint_copy(halves), vector.to(torch.bfloat16))


def test_a_disk_store_reuses_the_files_of_vectors_let_go_and_closes_them_with_the_tracker() -> None:
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_descriptors()
    store = VectorStore("disk")
    vector = torch.randn(3 * TRANSFER_BLOCK)
    kept = [store.keep(vector, dtype=vector.dtype, device=vector.device) for _ in range(3)]
    assert open_descriptors() == before + 3
    for _ in range(20):  # a walk's steps: one vector let go, one kept
        kept = [*kept[1:], store.keep(vector, dtype=vector.dtype, device=vector.device)]
    assert open_descriptors() == before + 4  # three in use, one spare
    assert all(torch.equal(checkpoint_copy(each), vector) for each in kept)
    del kept, store
    gc.collect()
    assert open_descriptors() == before


def test_close_lets_the_offloaded_vectors_go_while_an_attachment_keeps_the_tracker() -> None:
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    inputs, targets = _images(1, 28)
    torch.manual_seed(0)
    model = build_model("mlp", 1, 28, 10, 0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = open_descriptors()
    tracker = WalkTracker(model, MeasurementSet(inputs[:MEASURE_SIZE], targets[:MEASURE_SIZE]), offload="disk")
    tracker.attach(optimizer)  # the optimizer's hooks hold the tracker from here on
    for step in range(3):
        _minibatch_backward(model, optimizer, inputs, targets, step)
        optimizer.step()
    assert open_descriptors() > before + 1
    tracker.close()
    gc.collect()
    # θ_0 stays (distances from init may still be taken), in one file; the rest are closed.
    assert open_descriptors() == before + 1
    with pytest.raises(RuntimeError, match="before close"):
        tracker.state_dict()


def test_offload_settings_are_checked() -> None:
    model = build_model("mlp", 1, 28, 10, 0.1)
    measurement = MeasurementSet(torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    with pytest.raises(ValueError, match="offload must be"):
        WalkTracker(model, measurement, offload="nvme")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="offload_folder"):
        WalkTracker(model, measurement, offload="host", offload_folder="anywhere")
    with pytest.raises(ValueError, match="is not a folder"):
        WalkTracker(model, measurement, offload="disk", offload_folder="no/such/folder")
