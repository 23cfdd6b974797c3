"""benchmarks/gpu_speed.py on a CPU: its data decided before any device time, its report
written after each phase, so a GPU's minutes are never spent on numbers that are then lost.

The tier phase's runs are replaced by a stub (a smoke run takes minutes on a CPU): what is
checked is which runs it is given and on which data, and what the report keeps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import gpu_speed
from sgdwalk.training.config import WalkConfig

SMOKE_MLP_ON_CPU = ["--device", "cpu", "--tiny", "--archs", "mlp", "--tier-profile", "smoke"]


@pytest.fixture
def timed_runs(monkeypatch: pytest.MonkeyPatch) -> list[WalkConfig]:
    """The tier phase's runs, recorded instead of run."""
    runs: list[WalkConfig] = []

    def record(configs: Sequence[WalkConfig], device: torch.device) -> float:
        runs.extend(configs)
        return 1.0

    monkeypatch.setattr(gpu_speed, "time_part_runs", record)
    return runs


def read(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result


def test_without_the_paper_data_the_smoke_runs_are_timed_on_fashion_mnist(
    fashion_root: Path, tmp_path: Path, timed_runs: list[WalkConfig]
) -> None:
    out = tmp_path / "speed.json"
    assert gpu_speed.main([*SMOKE_MLP_ON_CPU, "--data-root", str(fashion_root), "--out", str(out)]) == 0
    report = read(out)
    assert report["phases_done"] == ["speed", "tier"] and report["error"] is None
    assert report["archs"]["mlp"]["train_images_per_s"] > 0
    assert report["tier"]["data"]["mlp"]["name"] == "fashion-mnist"
    assert "mnist, missing" in report["tier"]["data"]["mlp"]["note"]
    # Only the part asked for (--archs mlp), every one of its smoke runs, on the fallback.
    assert {config.arch for config in timed_runs} == {"mlp"}
    assert {config.data for config in timed_runs} == {"fashion-mnist"}
    assert len(timed_runs) == report["tier"]["runs"]


def test_missing_data_stops_the_script_before_any_device_time(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def spent(*args: object) -> None:
        raise AssertionError("device time spent before the data was decided")

    monkeypatch.setattr(gpu_speed, "speed", spent)
    out = tmp_path / "speed.json"
    code = gpu_speed.main([*SMOKE_MLP_ON_CPU, "--data", "paper", "--data-root", str(fashion_root), "--out", str(out)])
    assert code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("gpu_speed.py: data set 'mnist' not found (--data paper)")
    assert line.endswith("--data fashion-mnist")
    assert not out.exists()


def test_a_failing_phase_keeps_the_phases_before_it(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(configs: Sequence[WalkConfig], device: torch.device) -> float:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(gpu_speed, "time_part_runs", out_of_memory)
    out = tmp_path / "speed.json"
    with pytest.raises(RuntimeError, match="out of memory"):
        gpu_speed.main([*SMOKE_MLP_ON_CPU, "--data-root", str(fashion_root), "--out", str(out)])
    report = read(out)
    assert report["phases_done"] == ["speed"]
    assert report["archs"]["mlp"]["segment_ms"] > 0
    assert report["error"] == "tier: RuntimeError: CUDA out of memory"


def test_an_unknown_architecture_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        gpu_speed.main(["--device", "cpu", "--archs", "mlp,resnet18"])
    assert exit_info.value.code == 2
    assert "--archs: choose from vgg11, resnet56, mlp, got mlp,resnet18" in capsys.readouterr().err


def test_the_memory_phase_runs_gd_and_hessian_vector_products(tmp_path: Path) -> None:
    """On a CPU it runs the same computations (no device count of memory exists there)."""
    out = tmp_path / "speed.json"
    assert gpu_speed.main(["--device", "cpu", "--tiny", "--archs", "mlp", "--memory", "--out", str(out)]) == 0
    report = read(out)
    assert report["phases_done"] == ["speed", "memory"]
    memory = report["memory"]["mlp"]
    assert (memory["gd_images"], memory["hvp_images"], memory["gd_peak_mib"], memory["hvp_peak_mib"]) == (
        64,
        32,
        None,
        None,
    )
    assert memory["parameters_mib"] > 0
