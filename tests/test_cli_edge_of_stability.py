"""X1 from the command line: the MLP without batch norm, with tanh, trained by full-batch GD
with its sharpness tracked, and the edge-of-stability figure `sgdwalk plot` draws of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgdwalk.cli import main
from sgdwalk.cli.exits import EXIT_OK
from sgdwalk.runs.runlog import load_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow  # a whole CLI run with its figures
def test_a_gd_run_of_the_tanh_mlp_without_batch_norm_draws_its_edge_of_stability(
    fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    code = main(
        [
            "walk", "--arch", "mlp", "--no-batch-norm", "--activation", "tanh", "--width-multiplier", "0.05",
            "--optimizer", "gd", "--lr", "0.5", "--weight-decay", "0", "--epochs", "8", "--track-epochs", "none",
            "--track-steps", "0:8", "--sharpness-every", "2", "--train-subset", "0", "--measurement-size", "0",
            "--data-root", str(fashion_root), "--device", "cpu", "--no-progress", "--no-figures",
            "--out", str(run_dir),
        ]
    )  # fmt: skip
    assert code == EXIT_OK
    table = capsys.readouterr().out
    assert "1-8" in table  # one window for the run's 8 consecutive updates, not 8 one-update epochs

    run = load_run(run_dir)
    assert not run.config.batch_norm and run.config.activation == "tanh"
    assert run.steps["sharpness"].notna().sum() == 4  # updates 0, 2, 4, 6
    # Evaluated at the first and last epoch (full-batch default: every 10 updates).
    assert run.epochs["train_loss"].notna().tolist() == [True] + [False] * 7 + [True]

    assert main(["plot", str(run_dir)]) == EXIT_OK
    assert (run_dir / "figures" / "edge_of_stability.png").stat().st_size > 0
