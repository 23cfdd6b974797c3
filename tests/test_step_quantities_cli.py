"""``sgdwalk walk`` with the optional quantities on: their flags reach the records, a run
stopped and resumed writes the records of an uninterrupted one bit for bit, and a setting
that cannot be measured is refused before training.

The walk is test_sinks_resume's: the MLP at 5% width on tiny Fashion-MNIST files, 2 epochs
of 6 steps, every step tracked, a checkpoint after epoch 1, stopped at the end of epoch 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgdwalk.cli import main
from sgdwalk.cli.exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from sgdwalk.instrument.record import SCHEDULED_FIELDS
from sgdwalk.runs.runlog import load_run
from tests.test_sinks_resume import RESUME, TWO_EPOCHS, stop_at_the_end_of_epoch_2

QUANTITIES = [
    "--bn-mode", "eval", "--hessian-trace-every", "2", "--hessian-trace-probes", "6",
    "--gradient-noise-scale-every", "3", "--top-eigenvalues-every", "4", "--top-eigenvalues-k", "2",
]  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_resumed_run_records_the_quantities_of_an_uninterrupted_one(fashion_root: Path, tmp_path: Path) -> None:
    flags = [*TWO_EPOCHS, *QUANTITIES, "--data-root", str(fashion_root)]
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert main(["walk", *flags, "--out", str(whole)]) == EXIT_OK
    with pytest.MonkeyPatch.context() as patch:
        stop_at_the_end_of_epoch_2(patch)
        assert main(["walk", *flags, "--out", str(stopped)]) == EXIT_INTERRUPTED
    assert main(["walk", "--resume", str(stopped), *RESUME]) == EXIT_OK

    records = load_run(whole).step_records()
    assert load_run(stopped).step_records() == records
    assert (stopped / "steps.jsonl").read_bytes() == (whole / "steps.jsonl").read_bytes()
    for record in records:
        assert (record.hessian_trace is not None) == (record.step % 2 == 0)
        assert (record.gradient_noise_scale_se is not None) == (record.step % 3 == 0)
        assert (record.top_eigenvalues is not None) == (record.step % 4 == 0)
        assert record.top_eigenvalues is None or len(record.top_eigenvalues) == 2
    # A written line holds a scheduled field only on its steps.
    lines = [json.loads(line) for line in (whole / "steps.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [sorted(set(line) & SCHEDULED_FIELDS) for line in lines[4:6]] == [
        ["hessian_trace", "hessian_trace_se", "top_eigenvalues"],
        [],
    ]


def test_the_noise_scale_under_batch_norm_in_train_mode_is_refused_before_training(
    fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*TWO_EPOCHS, "--gradient-noise-scale-every", "2", "--data-root", str(fashion_root)]
    assert main(["walk", *flags, "--out", str(tmp_path / "run")]) == EXIT_USAGE
    assert "gradient_noise_scale_every needs per-sample gradients" in capsys.readouterr().err
    assert not (tmp_path / "run" / "steps.jsonl").exists()


def test_under_batch_norm_in_train_mode_the_noise_scale_reads_minibatch_gradients(
    fashion_root: Path, tmp_path: Path
) -> None:
    flags = [*TWO_EPOCHS, "--gradient-noise-scale-every", "3", "--gradient-noise-batch", "4"]
    assert main(["walk", *flags, "--data-root", str(fashion_root), "--out", str(tmp_path / "run")]) == EXIT_OK
    records = load_run(tmp_path / "run").step_records()
    noisy = [r for r in records if r.gradient_noise_scale is not None]
    assert [r.step for r in noisy] == [0, 3, 6, 9]
    assert all(r.gradient_noise_scale_se is not None and r.gradient_noise_scale_se > 0 for r in noisy)
