"""``sgdwalk walk --log-to``: the run directory's records, also in the sinks the flag names."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgdwalk.cli import main
from sgdwalk.cli.exits import EXIT_OK, EXIT_USAGE
from sgdwalk.integrations.csv_sink import read_csv_metrics
from sgdwalk.integrations.metrics import flat_metrics
from sgdwalk.runs.runlog import load_run

# As tests/test_cli_walk.py: one epoch, 2 measured steps on 16 images, no figures.
FEW_STEPS = [
    "--epochs", "1", "--track-epochs", "1", "--steps-per-window", "2", "--measurement-size", "16",
    "--batch-size", "10", "--train-subset", "0", "--no-figures", "--device", "cpu", "--no-progress",
    "--width-multiplier", "0.05",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def test_log_to_csv_holds_the_run_directorys_records(fashion_root: Path, tmp_path: Path) -> None:
    out, table = tmp_path / "run", tmp_path / "logs" / "walk.csv"
    code = main(["walk", "--data-root", str(fashion_root), "--out", str(out), "--log-to", f"csv:{table}", *FEW_STEPS])
    assert code == EXIT_OK
    records = load_run(out).step_records()
    assert [r.step for r in records] == [0, 1]
    assert read_csv_metrics(table) == [(r.step, flat_metrics(r)) for r in records]


def test_log_to_twice_logs_to_both(fashion_root: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    flags = ["--log-to", f"csv:{first}", "--log-to", f"csv:{second}"]
    assert main(["walk", "--data-root", str(fashion_root), "--out", str(tmp_path / "run"), *flags, *FEW_STEPS]) == 0
    assert read_csv_metrics(first) == read_csv_metrics(second) != []


def test_a_bad_log_to_is_a_usage_error_before_training(
    fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["walk", "--data-root", str(fashion_root), "--out", str(out), "--log-to", "parquet:x", *FEW_STEPS])
    assert code == EXIT_USAGE
    assert "--log-to takes one of csv:FILE, tensorboard:DIR, mlflow:URI; got 'parquet:x'" in capsys.readouterr().err
    assert not out.exists(), "nothing trained, nothing written"


@pytest.mark.parametrize(
    "second", ["csv:{folder}/walk.csv", "csv:{folder}/./walk.csv"], ids=["the same spelling", "another spelling"]
)
def test_one_target_named_twice_is_a_usage_error_before_training(
    second: str, fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each record went to it twice (found by a second pair of eyes: 6 rows for 3 records).
    out = tmp_path / "run"
    flags = ["--log-to", f"csv:{tmp_path}/walk.csv", "--log-to", second.format(folder=tmp_path)]
    assert main(["walk", "--data-root", str(fashion_root), "--out", str(out), *flags, *FEW_STEPS]) == EXIT_USAGE
    assert "name the same target: each record would be written to it twice" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "walk.csv").exists(), "nothing trained, nothing written"
