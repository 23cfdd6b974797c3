"""The float32 policy: TF32 off on CUDA for a run's whole length unless its config asks for it.

There is no GPU here: torch's TF32 switches are process-wide flags that can be set without
one, so the policy is checked by the flags it leaves, with the device it is given named cuda.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import torch

from sgdwalk.instrument.numerics import TF32Flags, float32_numerics, set_tf32_flags, tf32_flags, uses_tf32
from sgdwalk.instrument.record import StepRecord
from sgdwalk.runs import builders, runner
from tests.test_runner import tiny_config, tiny_data

CUDA = torch.device("cuda")
BOTH_ON = TF32Flags(cuda_matmul=True, cudnn=True)


@pytest.fixture(autouse=True)
def flags_restored() -> Iterator[None]:
    """Each test starts with TF32 on everywhere (what the policy must turn off) and leaves the
    flags as it found them."""
    saved = tf32_flags()
    set_tf32_flags(BOTH_ON)
    yield
    set_tf32_flags(saved)


@pytest.mark.parametrize(("tf32", "inside"), [(False, TF32Flags(False, False)), (True, BOTH_ON)])
def test_on_cuda_the_policy_sets_both_switches_and_restores_them(tf32: bool, inside: TF32Flags) -> None:
    set_tf32_flags(TF32Flags(cuda_matmul=False, cudnn=True))  # torch's own defaults
    with float32_numerics(CUDA, tf32=tf32):
        assert tf32_flags() == inside
    assert tf32_flags() == TF32Flags(cuda_matmul=False, cudnn=True)


def test_the_switches_are_restored_after_an_error() -> None:
    with pytest.raises(RuntimeError, match="boom"), float32_numerics(CUDA):
        assert tf32_flags() == TF32Flags(False, False)
        raise RuntimeError("boom")
    assert tf32_flags() == BOTH_ON


def test_off_cuda_nothing_changes() -> None:
    with float32_numerics(torch.device("cpu")):
        assert tf32_flags() == BOTH_ON
    assert not uses_tf32(torch.device("cpu"), tf32=True)
    assert uses_tf32(CUDA, tf32=True) and not uses_tf32(CUDA, tf32=False)


@pytest.mark.parametrize(("cuda_tf32", "inside"), [(False, TF32Flags(False, False)), (True, BOTH_ON)])
def test_a_run_measures_under_the_policy_from_start_to_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cuda_tf32: bool, inside: TF32Flags
) -> None:
    """The runner applies the policy with the run's device and config around the whole run:
    with the device seen as CUDA, every record is made with the flags the config asks for."""
    devices: list[torch.device] = []

    def policy_as_on_cuda(device: torch.device, *, tf32: bool = False) -> AbstractContextManager[None]:
        devices.append(device)
        return float32_numerics(CUDA, tf32=tf32)

    monkeypatch.setattr(builders, "float32_numerics", policy_as_on_cuda)
    seen: list[TF32Flags] = []

    def look(record: StepRecord) -> None:
        seen.append(tf32_flags())

    config = tiny_config(epochs=1, track_epochs=(1,), cuda_tf32=cuda_tf32, out_dir=str(tmp_path / "run"))
    result = runner.run_walk(config, data=tiny_data(), on_record=look)
    assert devices == [torch.device("cpu")]
    assert seen and set(seen) == {inside}
    assert tf32_flags() == BOTH_ON
    # A CPU run never uses TF32, whatever its config; its metadata says so.
    assert result.metadata["tf32"] is False


def test_a_resumed_run_takes_the_policy_of_its_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Resuming reads the config from the run directory: a TF32 run resumes in TF32."""
    config = tiny_config(epochs=2, track_epochs=(1, 2), cuda_tf32=True, out_dir=str(tmp_path / "run"))

    def stop(record: StepRecord) -> None:
        if record.step == 5:  # in epoch 2, after epoch 1's checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run_walk(config, data=tiny_data(), on_record=stop)
    asked: list[bool] = []

    def spy(device: torch.device, *, tf32: bool = False) -> AbstractContextManager[None]:
        asked.append(tf32)
        return float32_numerics(device, tf32=tf32)

    monkeypatch.setattr(builders, "float32_numerics", spy)
    assert runner.resume_walk(config.out_dir or "", data=tiny_data()).status == "finished"
    assert asked == [True]
