"""scripts/gpu-smoke.sh on a machine without CUDA: the estimate comes first, every phase is
timed in its file, and with no card it stops after the device phase, non-zero, saying so."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~25 s: the cost model, then pytest collecting the gpu tier, in subprocesses
@pytest.mark.skipif(torch.cuda.is_available(), reason="with a CUDA card the script runs the whole smoke profile")
def test_the_gpu_smoke_script_prints_its_estimate_first_and_times_every_phase(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_SMOKE_OUT": str(tmp_path), "GPU_SMOKE_PYTHON": sys.executable, "GPU_SPEED_TIMEOUT_S": "0"}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-smoke.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    lines = result.stdout.splitlines()
    estimate = [i for i, line in enumerate(lines) if re.match(r"estimated cost of the \d+ cells: .* PFLOP", line)]
    assert estimate and estimate[0] < lines.index(next(line for line in lines if line.startswith("== device")))
    rows = [line.split("\t") for line in (tmp_path / "smoke-phases.tsv").read_text(encoding="utf-8").splitlines()]
    # No card: the device phase fails and nothing runs after it (no false green).
    assert [(phase, status) for phase, status, _ in rows] == [("phase", "status"), ("estimate", "0"), ("device", "1")]
    assert result.returncode == 1
    assert "no CUDA device here" in result.stderr
    assert not (tmp_path / "smoke-report.json").exists()
    assert json.loads((tmp_path / "smoke-device.json").read_text(encoding="utf-8"))["device_name"] is None
