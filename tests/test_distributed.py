"""The tracker inside a torch.distributed run: 2 CPU processes, gloo, DistributedDataParallel.

Each process trains the same DDP model on its half of every global minibatch and measures
its share of the measurement set (chunks dealt round-robin, an odd number of them so the
shares differ). Checked against a single process:

(a) the records equal a single-process tracker's, replayed at the same parameters with the
    same gradients, to ``SUMMATION_ORDER`` (and are identical on both ranks);
(b) training is bitwise the same with the tracker as without it;
and only rank 0's sinks are called.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sgdwalk import MeasurementSet, PrecisionTarget, WalkTracker
from sgdwalk.instrument.distributed import Shard
from sgdwalk.instrument.geometry import flat_gradient, flat_parameters
from sgdwalk.instrument.wrappers import unwrapped
from tests.helpers import Tolerance

WORLD_SIZE = 2
STEPS = 6
GLOBAL_BATCH = 8
MEASURED = 120
CHUNK = 8  # 15 chunks: rank 0 evaluates 8, rank 1 evaluates 7
LR = 2.0  # steps long enough that the targeted tracker decides its barrier tests early

# The per-sample losses are bitwise the single process's (same chunks, same parameters, a
# float64 model); only the float64 sums are taken in another order (rank by rank, then
# merged) and the float64 Hessian-vector products summed over ranks instead of chunks: a
# few ulps (2^-52 ≈ 2e-16) per term, over ~100 terms. 1e-11 leaves that room a hundred
# times over and still catches a sample counted twice or left out (~1/120 of a loss's spread).
SUMMATION_ORDER = Tolerance(1e-11, 1e-12, "float64 sums over 120 samples and 15 chunks in another order")


def mlp() -> nn.Module:
    """With batch norm: measured in "train" mode, it normalises by the very chunks a single
    process would (the chunks are dealt out whole), so its records must match too."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 10), nn.BatchNorm1d(10), nn.Tanh(), nn.Linear(10, 3)).double()


def data() -> tuple[torch.Tensor, torch.Tensor, MeasurementSet]:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(STEPS * GLOBAL_BATCH, 6, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 3, (STEPS * GLOBAL_BATCH,), generator=generator)
    measured_inputs = torch.randn(MEASURED, 6, generator=generator, dtype=torch.float64)
    measured_targets = torch.randint(0, 3, (MEASURED,), generator=generator)
    return inputs, targets, MeasurementSet(measured_inputs, measured_targets, chunk_size=CHUNK)


def trackers(model: nn.Module, measurement: MeasurementSet, **kwargs: Any) -> list[WalkTracker]:
    """An exact tracker with the sharpness every other step, a precision-targeted one, and one
    in bn_mode "eval" (the running statistics: process 0's, which DDP hands to the others)."""
    return [
        WalkTracker(model, measurement, sharpness_every=2, **kwargs),
        WalkTracker(model, measurement, precision=PrecisionTarget(first_look=12, seed=3, height_se=0.1), **kwargs),
        WalkTracker(model, measurement, bn_mode="eval", sharpness_every=2, **kwargs),
    ]


def train_ddp(rank: int, tracked: bool) -> dict[str, Any]:
    """DDP training on this rank's half of each global batch, tracked or not."""
    inputs, targets, measurement = data()
    model = DistributedDataParallel(mlp())
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    written: list[int] = []
    running = trackers(model, measurement, sinks=[lambda record: written.append(record.step)]) if tracked else []
    points, gradients, statistics = [], [], []
    half = GLOBAL_BATCH // WORLD_SIZE
    for step in range(STEPS):
        first = step * GLOBAL_BATCH + rank * half
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs[first : first + half]), targets[first : first + half])
        loss.backward()
        points.append(flat_parameters(model))
        gradients.append(flat_gradient(model))
        for tracker in running:
            tracker.before_step(minibatch_loss=loss, lr=LR)
        optimizer.step()
        # This rank's running statistics, moved by its own half of the batch: DDP hands
        # process 0's to the others at the next forward, after the measurement.
        statistics.append([buffer.clone() for buffer in model.module.buffers()])
        for tracker in running:
            tracker.after_step()
    points.append(flat_parameters(model))
    return {
        "final": flat_parameters(model),
        "final_buffers": [buffer.clone() for buffer in model.module.buffers()],
        "statistics": statistics,
        "points": points,
        "gradients": gradients,
        "records": [[record.as_dict() for record in tracker.close()] for tracker in running],
        "written": written,
    }


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        result = {"tracked": train_ddp(rank, tracked=True), "untracked": train_ddp(rank, tracked=False)}
        dist.barrier()  # gloo aborts a rank whose peer tears down first
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def replayed_records(
    points: list[torch.Tensor],
    gradients: list[torch.Tensor],
    losses: list[float],
    statistics: list[list[torch.Tensor]],
) -> list[Any]:
    """A single-process tracker driven through the same parameters and gradients, its model
    holding process 0's running statistics (``statistics``) after each step."""
    model = mlp()
    _, _, measurement = data()
    running = trackers(model, measurement, shard=Shard())
    parameters = [p for p in model.parameters() if p.requires_grad]
    for step in range(STEPS):
        set_flat(parameters, points[step], gradients[step])
        for tracker in running:
            tracker.before_step(minibatch_loss=losses[step], lr=LR)
        set_flat(parameters, points[step + 1], None)
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), statistics[step], strict=True):
                buffer.copy_(value)
        for tracker in running:
            tracker.after_step()
    return [[record.as_dict() for record in tracker.close()] for tracker in running]


def set_flat(parameters: list[nn.Parameter], point: torch.Tensor, gradient: torch.Tensor | None) -> None:
    offset = 0
    with torch.no_grad():
        for parameter in parameters:
            size = parameter.numel()
            parameter.copy_(point[offset : offset + size].view_as(parameter))
            if gradient is not None:
                parameter.grad = gradient[offset : offset + size].view_as(parameter).clone()
            offset += size


def assert_records_close(actual: dict[str, Any], expected: dict[str, Any], tolerance: Tolerance) -> None:
    assert actual.keys() == expected.keys()
    for name, value in actual.items():
        reference = expected[name]
        if isinstance(value, float) and isinstance(reference, float):
            assert math.isclose(value, reference, rel_tol=tolerance.rtol, abs_tol=tolerance.atol), (
                f"step {actual['step']} {name}: {value} vs {reference} ({tolerance.reason})"
            )
        elif isinstance(value, (tuple, list)) and value and isinstance(value[0], float):
            assert len(value) == len(reference)
            for a, b in zip(value, reference, strict=True):
                assert math.isclose(a, b, rel_tol=tolerance.rtol, abs_tol=tolerance.atol), (
                    f"step {actual['step']} {name}: {value} vs {reference} ({tolerance.reason})"
                )
        else:
            assert value == reference, f"step {actual['step']} {name}: {value} vs {reference}"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(folder / "init"), str(folder)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


@pytest.mark.slow
def test_every_rank_makes_the_same_records_and_only_rank_0_writes(ranks: list[dict[str, Any]]) -> None:
    first, second = (rank["tracked"] for rank in ranks)
    assert first["records"] == second["records"]
    assert [len(records) for records in first["records"]] == [STEPS, STEPS, STEPS]
    assert first["written"] == [step for step in range(STEPS) for _ in first["records"]]
    assert second["written"] == []


@pytest.mark.slow
def test_ddp_records_equal_a_single_process_measurement_at_the_same_parameters(ranks: list[dict[str, Any]]) -> None:
    run = ranks[0]["tracked"]
    losses = [record["minibatch_loss"] for record in run["records"][0]]
    single = replayed_records(run["points"], run["gradients"], losses, run["statistics"])
    # The ranks' own statistics differ: the eval tracker's agreement below is not by chance.
    assert not all(
        torch.equal(a, b) for a, b in zip(run["statistics"][0], ranks[1]["tracked"]["statistics"][0], strict=True)
    )
    for distributed_records, single_records in zip(run["records"], single, strict=True):
        for actual, expected in zip(distributed_records, single_records, strict=True):
            assert_records_close(actual, expected, SUMMATION_ORDER)
    # The targeted tracker stopped early somewhere, so looks were shared out and merged.
    assert any(record["samples"] < MEASURED for record in run["records"][1])
    assert all(record["sharpness"] is not None for record in run["records"][0][::2])


@pytest.mark.slow
def test_the_tracker_leaves_ddp_training_bitwise_unchanged(ranks: list[dict[str, Any]]) -> None:
    for rank in ranks:
        assert torch.equal(rank["tracked"]["final"], rank["untracked"]["final"])
        # Each rank's own running statistics too: the eval tracker gives them back after measuring.
        for tracked, untracked in zip(
            rank["tracked"]["final_buffers"], rank["untracked"]["final_buffers"], strict=True
        ):
            assert torch.equal(tracked, untracked)
    assert torch.equal(ranks[0]["tracked"]["final"], ranks[1]["tracked"]["final"])


@pytest.mark.slow
def test_the_recorded_minibatch_loss_is_the_mean_of_the_ranks(ranks: list[dict[str, Any]]) -> None:
    # Each rank passes its half's loss (batch norm normalising that half, as in DDP training);
    # the record holds their mean, the same on every rank.
    run = ranks[0]["tracked"]
    inputs, targets, _ = data()
    model = mlp().train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    half = GLOBAL_BATCH // WORLD_SIZE
    for step, record in enumerate(run["records"][0]):
        set_flat(parameters, run["points"][step], None)
        halves = [slice(step * GLOBAL_BATCH + rank * half, step * GLOBAL_BATCH + (rank + 1) * half) for rank in (0, 1)]
        with torch.no_grad():
            expected = sum(float(F.cross_entropy(model(inputs[part]), targets[part])) for part in halves) / WORLD_SIZE
        assert math.isclose(record["minibatch_loss"], expected, rel_tol=SUMMATION_ORDER.rtol), (step, SUMMATION_ORDER)


def test_a_wrapped_model_is_measured_through_its_module() -> None:
    model = mlp()
    assert unwrapped(model) is model
    assert unwrapped(nn.DataParallel(model)) is model


def test_a_single_process_shard_sends_nothing() -> None:
    shard = Shard()
    tensor = torch.arange(3.0)
    assert shard.summed(tensor) is tensor and shard.gathered(tensor) == [tensor]
    assert shard.is_writer and not shard.distributed
    assert [shard.owns(part) for part in range(3)] == [True, True, True]
    assert [Shard(1, 2).owns(part) for part in range(4)] == [False, True, False, True]
    with pytest.raises(ValueError, match="rank 2"):
        Shard(2, 2)


def _refuses_sharded_parameters(rank: int, init_file: str) -> None:
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=1)
    try:
        model = mlp().float()
        fully_shard(model)  # in place: the module's parameters become DTensors
        _, _, measurement = data()
        with pytest.raises(ValueError, match=r"sharded across processes \(DTensor: FSDP's fully_shard"):
            WalkTracker(model, measurement)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_parameters_sharded_by_fsdp_are_refused_when_the_tracker_is_made(tmp_path: Path) -> None:
    """Before, FSDP's fully_shard trained until the first measured step and stopped there in
    torch's "mixed torch.Tensor and DTensor" error (a late window: hours in). In a process of
    its own, so that its process group is no other test's."""
    mp.spawn(_refuses_sharded_parameters, args=(str(tmp_path / "init"),), nprocs=1, join=True)
