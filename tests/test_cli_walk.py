"""``sgdwalk walk`` end to end on tiny data files in the real formats (tests/fixtures_data.py).

Most tests call ``sgdwalk.cli.main`` in-process (fast: torch is imported once); those about
the process itself (exit code and stderr of the installed entry point, no traceback) run
it as a subprocess. Each test stays well under 10 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sgdwalk.cli import main
from sgdwalk.cli.exits import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from sgdwalk.instrument.offload import VectorStore
from sgdwalk.runs import runner
from sgdwalk.runs.runlog import CHECKPOINT_FILE, METADATA_FILE, STEPS_FILE, SUMMARY_FILE, load_run
from sgdwalk.training import data as data_module
from sgdwalk.training.config import WalkConfig

# The process-level tests start a Python that imports torch: allow for a slow, shared CPU.
SUBPROCESS_TIMEOUT_SECONDS = 120
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# A few steps on tiny files: 1 epoch, 2 measured steps on 16 images, no figures.
FEW_STEPS = [
    "--epochs", "1", "--track-epochs", "1", "--steps-per-window", "2", "--measurement-size", "16",
    "--batch-size", "10", "--train-subset", "0", "--no-figures", "--device", "cpu", "--no-progress",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def _environment_without_data(tmp_path: Path) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key != data_module.ENV_DATA_ROOT}
    environment["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    environment["OMP_NUM_THREADS"] = "1"
    return environment


def _sgdwalk_executable() -> str:
    return str(Path(sys.executable).with_name("sgdwalk"))


# ------------------------------------------------------------------------- parsing
def test_help_documents_every_config_field_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["walk", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in WalkConfig.__dataclass_fields__:
        if name != "out_dir":
            assert f"--{name.replace('_', '-')}" in text, name
    for flag in ("--out DIR", "--resume DIR", "--config FILE", "--no-progress", "--track-every K"):
        assert flag in text
    assert "(default: 1111)" in text and "(default: 1,5)" in text and "(default: mlp)" in text


@pytest.mark.slow  # a fresh interpreter importing torch: ~4 s, run by scripts/test.sh's slow step
def test_the_help_runs_as_a_process() -> None:
    completed = subprocess.run(
        [_sgdwalk_executable(), "walk", "--help"], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS
    )
    assert completed.returncode == 0 and "--track-epochs" in completed.stdout


@pytest.mark.parametrize(
    "flags",
    [
        ["--optimizer", "adam"],
        ["--lr", "fast"],
        ["--track-epochs", "1,x"],
        ["--arch", "alexnet"],
        ["--no-such-flag"],
        ["--resume", "somewhere", "--lr", "0.1"],
    ],
    ids=["choice", "float", "list", "arch", "unknown", "resume-with-settings"],
)
def test_bad_flags_are_usage_errors(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["walk", *flags])
    assert exit_info.value.code == EXIT_USAGE
    # One line, pointing at the help rather than printing the walk's long usage.
    (line,) = capsys.readouterr().err.splitlines()
    # An unknown flag is the top-level parser's to report ("sgdwalk: error: unrecognized ...").
    assert line.startswith(("sgdwalk walk: error: ", "sgdwalk: error: ")) and line.endswith("--help)")


@pytest.mark.parametrize(
    ("flags", "config", "message"),
    [
        (["--lr", "inf"], None, "lr must be a finite number, got inf"),
        (["--weight-decay", "nan"], None, "weight_decay must be a finite number"),
        (["--width-multiplier", "inf"], None, "width_multiplier must be a finite number"),
        ([], '{"batch_size": 100.0, "epochs": 1, "track_epochs": [1]}', "batch_size must be an integer, got 100.0"),
        ([], '{"num_alphas": 3.7}', "num_alphas must be an integer"),
    ],
    ids=["inf-lr", "nan-weight-decay", "inf-width", "float-batch", "float-alphas"],
)
def test_a_setting_of_the_wrong_kind_is_refused_before_anything_is_written(
    flags: list[str], config: str | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_flags = []
    if config is not None:
        (tmp_path / "c.json").write_text(config)
        config_flags = ["--config", str(tmp_path / "c.json")]
    out = tmp_path / "run"
    code = main(["walk", *flags, *config_flags, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_an_inconsistent_config_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["walk", "--epochs", "2", "--track-epochs", "1,3", "--out", str(tmp_path / "run")])
    assert code == EXIT_USAGE
    assert "tracked epoch 3 is outside the run's epochs 1..2" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_subset_larger_than_the_split_is_a_usage_error(
    fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*FEW_STEPS, "--train-subset", "1000", "--data-root", str(fashion_root), "--out", str(tmp_path / "run")]
    assert main(["walk", *flags]) == EXIT_USAGE
    assert "data set 'fashion-mnist'" in capsys.readouterr().err


def test_resume_of_a_folder_that_is_no_run_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["walk", "--resume", str(tmp_path)]) == EXIT_USAGE
    assert "is not a run directory" in capsys.readouterr().err


# -------------------------------------------------------------------- missing data
@pytest.mark.slow  # a fresh interpreter importing torch: ~3 s, run by scripts/test.sh's slow step
def test_a_missing_data_set_is_one_message_and_exit_2_as_a_process(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    completed = subprocess.run(
        [_sgdwalk_executable(), "walk", "--data", "cifar10", "--data-root", str(empty), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=_environment_without_data(tmp_path),
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
    )
    assert completed.returncode == EXIT_USAGE
    assert "Traceback" not in completed.stderr
    assert "data set 'cifar10' not found" in completed.stderr
    for way in ("--data-root DIR", data_module.ENV_DATA_ROOT, "--download"):
        assert way in completed.stderr
    assert not (tmp_path / "run").exists()  # nothing is written before the data is there


def test_missing_fashion_mnist_names_the_three_ways(
    isolated_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["walk", "--out", str(tmp_path / "run")]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert error.startswith("sgdwalk walk: error: data set 'fashion-mnist' not found")
    for way in ("1. --data-root DIR", f"2. set the environment variable {data_module.ENV_DATA_ROOT}", "3. --download"):
        assert way in error


# --------------------------------------------------------------------------- runs
def test_fashion_mnist_run_writes_records_and_prints_the_summary(
    fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["walk", "--data-root", str(fashion_root), "--out", str(out), *FEW_STEPS, "--width-multiplier", "0.05"])
    assert code == EXIT_OK
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:2] == ["epoch", "steps"]
    assert f"records: {out}" in printed

    run = load_run(out)
    assert run.status == "finished" and run.steps["step"].tolist() == [0, 1]
    assert run.config.data == "fashion-mnist" and run.config.width_multiplier == 0.05
    assert run.metadata["data_source"] == str(fashion_root / "fashion-mnist")
    assert all((out / name).exists() for name in (STEPS_FILE, SUMMARY_FILE, CHECKPOINT_FILE))


@pytest.mark.slow  # a whole CLI run with its figures: end-to-end
def test_figures_are_drawn_at_the_end(fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sgdwalk.runs.plots")
    out = tmp_path / "run"
    flags = [flag for flag in FEW_STEPS if flag != "--no-figures"]
    flags += ["--data-root", str(fashion_root), "--out", str(out), "--width-multiplier", "0.05"]
    assert main(["walk", *flags]) == EXIT_OK
    assert f"figures: {out / 'figures'}" in capsys.readouterr().out
    assert any((out / "figures").iterdir())


@pytest.mark.slow  # VGG-11 and ResNet-56 trained through the CLI: end-to-end
@pytest.mark.parametrize(
    ("arch", "width"),
    [("vgg11", "0.125"), ("resnet56", "0.25")],
)
def test_paper_networks_on_cifar10_files(cifar_root: Path, tmp_path: Path, arch: str, width: str) -> None:
    out = tmp_path / arch
    flags = ["--arch", arch, "--data", "cifar10", "--data-root", str(cifar_root), "--width-multiplier", width]
    assert main(["walk", *flags, "--augment", "--out", str(out), *FEW_STEPS]) == EXIT_OK
    run = load_run(out)
    assert run.config.arch == arch and run.config.augment
    assert run.metadata["train_size"] == 50 and run.metadata["steps_per_epoch"] == 5
    assert len(run.steps) == 2 and run.steps["loss_start"].notna().all()


def test_config_file_with_flags_overriding_it(fashion_root: Path, tmp_path: Path) -> None:
    config_file = tmp_path / "walk.json"
    config_file.write_text(json.dumps({"lr": 0.05, "width_multiplier": 0.05, "seed": 3}))
    out = tmp_path / "run"
    assert main(["walk", "--config", str(config_file), "--lr", "0.07", "--data-root", str(fashion_root),
                 "--out", str(out), *FEW_STEPS]) == EXIT_OK  # fmt: skip
    config = load_run(out).config
    assert (config.lr, config.seed, config.width_multiplier) == (0.07, 3, 0.05)


def test_offload_keeps_the_records_bitwise_and_out_of_the_config_hash(fashion_root: Path, tmp_path: Path) -> None:
    flags = [*FEW_STEPS, "--width-multiplier", "0.05", "--data-root", str(fashion_root)]
    assert main(["walk", *flags, "--out", str(tmp_path / "beside")]) == EXIT_OK
    assert main(["walk", *flags, "--offload", "disk", "--out", str(tmp_path / "disk")]) == EXIT_OK
    assert (tmp_path / "disk" / STEPS_FILE).read_bytes() == (tmp_path / "beside" / STEPS_FILE).read_bytes()
    offloaded = load_run(tmp_path / "disk").config
    assert offloaded.offload == "disk"
    assert offloaded.result_hash == load_run(tmp_path / "beside").config.result_hash


def _whole_and_interrupted(monkeypatch: pytest.MonkeyPatch, fashion_root: Path, tmp_path: Path) -> Path:
    """Two epochs run whole into tmp_path/whole, and again into tmp_path/run with Ctrl-C at the
    end of epoch 2 (after epoch 1's checkpoint); returns the interrupted run's directory."""
    flags = [*FEW_STEPS, "--width-multiplier", "0.05", "--epochs", "2", "--track-epochs", "1,2"]
    flags += ["--data-root", str(fashion_root)]
    assert main(["walk", *flags, "--out", str(tmp_path / "whole")]) == EXIT_OK
    out = tmp_path / "run"
    original_entry = runner._WalkRun._epoch_entry

    def ctrl_c_at_the_end_of_epoch_2(self: runner._WalkRun, epoch: int, *args: Any) -> dict[str, Any]:
        if epoch == 2:
            raise KeyboardInterrupt
        return original_entry(self, epoch, *args)

    with monkeypatch.context() as patch:
        patch.setattr(runner._WalkRun, "_epoch_entry", ctrl_c_at_the_end_of_epoch_2)
        assert main(["walk", *flags, "--out", str(out)]) == EXIT_INTERRUPTED
    return out


def test_a_run_short_of_memory_resumes_with_its_vectors_offloaded(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _whole_and_interrupted(monkeypatch, fashion_root, tmp_path)
    kept: list[str] = []
    original_keep = VectorStore.keep

    def counted_keep(self: VectorStore, *args: Any, **kwargs: Any) -> Any:
        kept.append(self.target)
        return original_keep(self, *args, **kwargs)

    monkeypatch.setattr(VectorStore, "keep", counted_keep)
    assert main(["walk", "--resume", str(out), "--offload", "disk", "--no-progress", "--no-figures"]) == EXIT_OK
    assert kept and set(kept) == {"disk"}  # the resumed tracker kept its vectors on disk
    assert (out / STEPS_FILE).read_bytes() == (tmp_path / "whole" / STEPS_FILE).read_bytes()


def test_divergence_exits_3_and_keeps_the_records(
    fashion_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["walk", "--lr", "1e12", "--data-root", str(fashion_root), "--out", str(out), *FEW_STEPS,
                 "--width-multiplier", "0.05"])  # fmt: skip
    assert code == EXIT_DIVERGED
    assert "diverged" in capsys.readouterr().err
    metadata = json.loads((out / METADATA_FILE).read_text())
    # The loss passes 1000 times its start one step before it stops being finite.
    assert metadata["status"] == "diverged" and "times its starting value" in metadata["divergence"]


def test_ctrl_c_then_resume_gives_the_uninterrupted_records(
    fashion_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _whole_and_interrupted(monkeypatch, fashion_root, tmp_path)
    assert f"continue with `sgdwalk walk --resume {out}`\n" in capsys.readouterr().err  # the directory itself
    assert json.loads((out / METADATA_FILE).read_text())["status"] == "interrupted"

    assert main(["walk", "--resume", str(out), "--no-progress", "--no-figures"]) == EXIT_OK
    assert (out / STEPS_FILE).read_bytes() == (tmp_path / "whole" / STEPS_FILE).read_bytes()
    run = load_run(out)
    assert run.status == "finished"
    # Interrupted in epoch 2: resumed from the checkpoint made after epoch 1.
    assert [entry["after_epoch"] for entry in run.metadata["resumed"]] == [1]


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_the_default_laptop_run(tmp_path: Path) -> None:
    """The defaults as a user runs them: real Fashion-MNIST, figures included (~1-2 min)."""
    completed = subprocess.run(
        [_sgdwalk_executable(), "walk", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=10 * SUBPROCESS_TIMEOUT_SECONDS,
    )
    assert completed.returncode == EXIT_OK, completed.stderr
    run = load_run(tmp_path / "run")
    assert run.status == "finished" and sorted(run.steps["epoch"].unique()) == [1, 5]
