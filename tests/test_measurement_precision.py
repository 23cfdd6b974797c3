"""The measurement precision setting: float32 changes nothing, bfloat16 stays within its
named tolerance of float32, sharpness and training stay float32, and a run resumes in the
precision it began in. (Its error against float64 as a fraction of the standard error is a
benchmark: benchmarks/test_measurement_precision.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sgdwalk.instrument.batchnorm import BatchNormMode
from sgdwalk.instrument.geometry import flat_parameters
from sgdwalk.instrument.measurement import MeasurementSet, segment_losses
from sgdwalk.instrument.measurement_precision import MeasurementPrecision, bfloat16_unsupported_reason
from sgdwalk.instrument.record import StepRecord
from sgdwalk.instrument.segment import alpha_grid, summarize_segment
from sgdwalk.instrument.tolerances import BFLOAT16_LOSS_RELATIVE_TOLERANCE
from sgdwalk.instrument.tracker import WalkTracker
from sgdwalk.runs import runner
from sgdwalk.training.models import build_model
from tests.helpers import classification_data, mlp
from tests.test_measurement_bitwise import TARGET, walk
from tests.test_runner import tiny_config, tiny_data

BN_MODES: tuple[BatchNormMode, ...] = ("train", "eval", "recompute")


# ------------------------------------------------------------------------- float32 mode
@pytest.mark.parametrize(
    ("bn_mode", "targeted"),
    [("train", False), ("eval", False), ("recompute", False), ("train", True)],
    ids=["train-exact", "eval-exact", "recompute-exact", "train-targeted"],
)
def test_float32_mode_records_are_bitwise_the_plain_evaluation(bn_mode: BatchNormMode, targeted: bool) -> None:
    # The plain float32 forward of every point, as before the setting existed.
    for record, expected in walk(10, bn_mode, TARGET if targeted else None, measurement_precision="float32"):
        actual = {name: value for name, value in record.as_dict().items() if name in expected}
        assert actual == expected, f"step {record.step}"


@pytest.mark.parametrize("sharpness_every", [None, 2], ids=["segments", "with-sharpness"])
@pytest.mark.parametrize("attached", [False, True], ids=["with-block", "attach"])
def test_a_step_taken_under_the_loop_s_autocast_is_measured_in_float32(
    attached: bool, sharpness_every: int | None
) -> None:
    # A loop that runs its whole step under bfloat16 autocast (the optimizer's step, and with it
    # the attachment's hooks or the `with` block) trains as one whose step is outside it, so
    # the records must be those of that loop, bit for bit: the tracker measures in its own
    # precision. They were measured in the loop's bfloat16 (0.4 of a standard error off on a
    # barrier excess, found by a second pair of eyes).
    def records(whole_step_autocast: bool) -> list[dict[str, object]]:
        torch.manual_seed(0)
        model = mlp(0, hidden=16, batchnorm=True)
        inputs, targets = classification_data(0, 96)
        tracker = WalkTracker(model, MeasurementSet(inputs[:32], targets[:32]), sharpness_every=sharpness_every)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        if attached:
            tracker.attach(optimizer)
        for step in range(4):
            batch = slice(32 + 16 * step, 48 + 16 * step)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=whole_step_autocast):
                optimizer.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
                loss.backward()
                if attached:
                    optimizer.step()
                else:
                    with tracker.step(optimizer=optimizer):
                        optimizer.step()
        return [record.as_dict() for record in tracker.close()]

    assert records(whole_step_autocast=True) == records(whole_step_autocast=False)


# ------------------------------------------------------------------------ bfloat16 mode
def setting(arch: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, MeasurementSet]:
    """A network, a segment of it and a measurement set: the tests' MLP (plain path), the
    paper's MLP (affine input shortcut) or the conv net (channels-last, shortcut)."""
    generator = torch.Generator().manual_seed(1)
    if arch == "small":
        model: nn.Module = mlp(0, hidden=16, batchnorm=True)
        inputs, targets = classification_data(0, 64)
        step = 0.05
    else:
        torch.manual_seed(0)
        model = build_model(arch, in_channels=1, image_size=28, num_classes=10, width_multiplier=0.25)
        inputs = torch.randn(64, 1, 28, 28, generator=generator)
        targets = torch.randint(0, 10, (64,), generator=generator)
        step = 0.01
    start = flat_parameters(model)
    end = start + step * torch.randn(start.shape, generator=generator)
    return model, start, end, MeasurementSet(inputs, targets, chunk_size=16)


@pytest.mark.parametrize("bn_mode", BN_MODES)
@pytest.mark.parametrize("arch", ["small", "mlp", "convnet"])
def test_bfloat16_losses_and_heights_lie_within_the_named_tolerance_of_float32(
    arch: str, bn_mode: BatchNormMode
) -> None:
    model, start, end, measurement = setting(arch)
    alphas = alpha_grid(10)
    float32, bfloat16 = (
        segment_losses(model, start, end, alphas, measurement, bn_mode, include_end=True, precision=precision)
        for precision in ("float32", "bfloat16")
    )
    assert not np.array_equal(float32, bfloat16), "bfloat16 mode measured in float32"
    np.testing.assert_array_less(np.abs(bfloat16 - float32), BFLOAT16_LOSS_RELATIVE_TOLERANCE * np.abs(float32))
    # A height is a difference of two losses, each within the tolerance.
    allowed = 2 * BFLOAT16_LOSS_RELATIVE_TOLERANCE * float(np.max(np.abs(float32)))
    summaries = [summarize_segment(alphas, losses[:-1], float(losses[-1])) for losses in (float32, bfloat16)]
    for height in ("height_start", "height_end"):
        assert abs(getattr(summaries[1], height) - getattr(summaries[0], height)) <= allowed, height


def test_bfloat16_records_lie_within_the_named_tolerance_of_the_float32_reference() -> None:
    # The same walk (the tracker never changes training), its records against the float32 reference.
    compared = walk(10, "train", None, measurement_precision="bfloat16")
    for record, expected in compared:
        measured, reference = np.array(record.segment_losses), np.array(expected["segment_losses"])
        assert not np.array_equal(measured, reference), f"step {record.step} measured in float32"
        np.testing.assert_array_less(
            np.abs(measured - reference), BFLOAT16_LOSS_RELATIVE_TOLERANCE * np.abs(reference), f"step {record.step}"
        )


# ------------------------------------------------------------- sharpness and training
def sharpness_walk(precision: MeasurementPrecision) -> tuple[list[StepRecord], torch.Tensor]:
    """Records with sharpness at every step, and the parameters the walk ends at."""
    model = mlp(0, hidden=16, batchnorm=True)
    inputs, targets = classification_data(0, 96)
    measurement = MeasurementSet(inputs[:64], targets[:64], chunk_size=16)
    tracker = WalkTracker(model, measurement, sharpness_every=1, measurement_precision=precision)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(3):
        batch = slice(64 + 8 * step, 72 + 8 * step)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
        loss.backward()
        with tracker.step(minibatch_loss=loss):
            optimizer.step()
    return tracker.close(), flat_parameters(model)


def test_sharpness_and_training_stay_float32_under_bfloat16_measurement() -> None:
    """Sharpness is not refused: it is measured in float32 whatever the setting, bitwise."""
    (float32, end32), (bfloat16, end16) = sharpness_walk("float32"), sharpness_walk("bfloat16")
    assert torch.equal(end32, end16)  # training: bitwise the same
    for record32, record16 in zip(float32, bfloat16, strict=True):
        assert record16.sharpness is not None
        assert (record16.sharpness, record16.sharpness_se) == (record32.sharpness, record32.sharpness_se)
        assert (record16.cosine, record16.grad_norm) == (record32.cosine, record32.grad_norm)
        assert record16.segment_losses != record32.segment_losses  # while the segments took bf16


# ---------------------------------------------------------------------------- the setting
def test_an_unknown_precision_is_refused_by_name() -> None:
    model = mlp(0)
    inputs, targets = classification_data(0, 8)
    with pytest.raises(ValueError, match="unknown measurement precision 'float16'"):
        WalkTracker(model, MeasurementSet(inputs, targets), measurement_precision="float16")  # type: ignore[arg-type]


def test_a_checkpoint_resumes_only_in_the_precision_it_was_measured_in() -> None:
    model = mlp(0)
    inputs, targets = classification_data(0, 8)
    measurement = MeasurementSet(inputs, targets)
    state = WalkTracker(model, measurement, measurement_precision="bfloat16").state_dict()
    assert state["measurement_precision"] == "bfloat16"
    with pytest.raises(ValueError, match="measured in bfloat16, this tracker measures in float32"):
        WalkTracker(model, measurement).load_state_dict(state)
    WalkTracker(model, measurement, measurement_precision="bfloat16").load_state_dict(state)
    older = {name: value for name, value in state.items() if name != "measurement_precision"}
    WalkTracker(model, measurement).load_state_dict(older)  # checkpoints from before the setting: float32
    with pytest.raises(ValueError, match="measured in float32"):
        WalkTracker(model, measurement, measurement_precision="bfloat16").load_state_dict(older)


@pytest.mark.parametrize(("capability", "native"), [("AVX512", True), ("AVX2", False), ("DEFAULT", False)])
def test_bfloat16_is_native_on_cpus_with_avx512(monkeypatch: pytest.MonkeyPatch, capability: str, native: bool) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    reason = bfloat16_unsupported_reason(torch.device("cpu"))
    assert (reason is None) == native
    assert reason is None or capability in reason


def test_a_run_measures_in_its_configs_precision_and_resumes_in_it(tmp_path: Path) -> None:
    """A bfloat16 run interrupted and resumed (its tracker checks the checkpoint's precision)
    equals the uninterrupted bfloat16 run, and differs from the float32 run."""
    config = tiny_config(epochs=2, track_epochs=(1, 2), measurement_precision="bfloat16")
    whole = runner.run_walk(config, data=tiny_data()).records
    float32 = runner.run_walk(config.replace(measurement_precision="float32"), data=tiny_data()).records
    assert [record.segment_losses for record in whole] != [record.segment_losses for record in float32]

    def stop(record: StepRecord) -> None:
        if record.step == 5:  # in epoch 2, after epoch 1's checkpoint
            raise KeyboardInterrupt

    interrupted = config.replace(out_dir=str(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        runner.run_walk(interrupted, data=tiny_data(), on_record=stop)
    resumed = runner.resume_walk(tmp_path / "run", data=tiny_data())
    assert [record.as_dict() for record in resumed.records] == [record.as_dict() for record in whole]
