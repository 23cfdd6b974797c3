"""The gpu tier on a machine that cannot run it: which data each part gets, and a session that
fails (not skips) when a device or a data set is missing, unless skips are asked for.

The session tests run the real ``suites/gpu`` in-process (pytester) with every data location
emptied (``isolated_data``) and, where the test needs it, CUDA hidden: collection alone
decides, so no network trains.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch

from sgdwalk.training.data import DatasetNotFoundError
from suites.gpu.claims import FALLBACK_DATA, PARTS, choose_data
from suites.profiles import PROFILES
from tests.fixtures_data import write_mnist_idx

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[1]
ONE_CLAIM = "mlp-C7-early-barriers"
# A profile sized for a CPU with verdicts, as the lead's "nets" profile is: the auto fallback
# follows needs_cuda, not the profile's name.
CPU_PROFILE = dataclasses.replace(PROFILES["smoke"], name="cpu-sized", needs_cuda=False)


# ---------------------------------------------------------------------------- data choice
@pytest.mark.parametrize("profile", [PROFILES["tiny"], CPU_PROFILE], ids=lambda profile: profile.name)
def test_auto_falls_back_to_fashion_mnist_for_a_cpu_profile(fashion_root: Path, profile: object) -> None:
    choice = choose_data(PARTS["vgg11"], "auto", profile, str(fashion_root))  # type: ignore[arg-type]
    assert (choice.name, choice.pad_to, choice.fallback) == (FALLBACK_DATA, 32, True)
    assert "cifar10 is missing" in choice.note


@pytest.mark.parametrize("flag", ["--sgdwalk-gpu-data", "--data"])
def test_a_gpu_profile_needs_its_paper_data_and_the_error_names_the_flag(fashion_root: Path, flag: str) -> None:
    with pytest.raises(DatasetNotFoundError, match=f"cifar10(.|\n)*{flag} fashion-mnist$"):
        choose_data(PARTS["vgg11"], "auto", PROFILES["smoke"], str(fashion_root), flag=flag)


def test_the_paper_data_when_found_and_fashion_mnist_when_asked(fashion_root: Path) -> None:
    write_mnist_idx(fashion_root, layout="torchvision", dataset="mnist", n_train=60, n_test=10)
    assert choose_data(PARTS["mlp"], "auto", PROFILES["smoke"], str(fashion_root)).name == "mnist"
    asked = choose_data(PARTS["mlp"], FALLBACK_DATA, PROFILES["smoke"], str(fashion_root), flag="--data")
    assert asked.name == FALLBACK_DATA and asked.note.endswith("asked for by --data")


# ------------------------------------------------------------------------------ sessions
def run_tier(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """``pytest suites/gpu --runslow ARGS`` in this process, one claim test selected."""
    return pytester.runpytest_inprocess(
        str(REPO_ROOT / "suites" / "gpu"),
        "--runslow",
        "-k",
        ONE_CLAIM,
        "-p",
        "no:cacheprovider",
        # The inner session re-registers modules this one imported; pytest cannot rewrite their asserts.
        "-W",
        "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning",
        *args,
    )


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an old driver looks like to torch: no CUDA device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


CPU_TINY = ("--sgdwalk-device", "cpu", "--sgdwalk-profile", "tiny")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # No data set at all: the tiny profile's fallback is missing too.
        (
            CPU_TINY,
            "mlp: data set 'fashion-mnist' not found; give its folder with --sgdwalk-data-root DIR (or $SGDWALK_DATA_ROOT) (",
        ),
        (
            (*CPU_TINY, "--sgdwalk-gpu-data", "paper"),
            "mlp: data set 'mnist' not found; give its folder with --sgdwalk-data-root DIR (or $SGDWALK_DATA_ROOT), "
            "or run on fashion-mnist: --sgdwalk-gpu-data fashion-mnist (",
        ),
        (("--sgdwalk-profile", "smoke"), "no CUDA device (torch.cuda.is_available() is False"),
        (("--sgdwalk-profile", "tiny"), "no CUDA device"),
        (("--sgdwalk-device", "cpu", "--sgdwalk-profile", "smoke"), "the smoke profile is sized for a GPU"),
    ],
    ids=["no-data", "no-paper-data", "no-cuda-smoke", "no-cuda-auto-device", "smoke-on-cpu"],
)
def test_a_tier_that_cannot_run_here_fails_unless_skips_are_asked_for(
    pytester: pytest.Pytester, isolated_data: Path, no_cuda: None, args: tuple[str, ...], message: str
) -> None:
    failed = run_tier(pytester, *args)
    assert failed.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [line for line in failed.errlines if line.startswith("ERROR: gpu tier cannot run here")]
    assert message in line and line.endswith("(--sgdwalk-gpu-allow-skip skips these tests)")

    skipped = run_tier(pytester, *args, "--sgdwalk-gpu-allow-skip")
    assert skipped.ret == pytest.ExitCode.OK
    skipped.assert_outcomes(skipped=1)  # the one claim test selected
    assert message.removesuffix(" (") in skipped.stdout.str()


def test_the_ci_command_collects_with_its_data_and_no_cuda(
    pytester: pytest.Pytester, fashion_root: Path, no_cuda: None
) -> None:
    """`pytest suites/gpu --runslow --sgdwalk-device cpu --sgdwalk-profile tiny` (CI) still
    runs on Fashion-MNIST; only collection is run here (the claim itself is the tier's job)."""
    result = run_tier(pytester, *CPU_TINY, "--sgdwalk-data-root", str(fashion_root), "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"*test_claim[[]{ONE_CLAIM}[]]*"])


def test_without_runslow_or_with_the_claims_deselected_nothing_fails(
    pytester: pytest.Pytester, isolated_data: Path, no_cuda: None
) -> None:
    """The claim tests do not run then, so nothing is missing: plain collection of the tier
    (its fast tests) never stops on the machine."""
    deselected = run_tier(pytester, "-m", "not slow")
    assert deselected.ret == pytest.ExitCode.NO_TESTS_COLLECTED  # -k ONE_CLAIM and -m "not slow" leave none
    without_runslow = pytester.runpytest_inprocess(
        str(REPO_ROOT / "suites" / "gpu"),
        "-p",
        "no:cacheprovider",
        "-k",
        f"{ONE_CLAIM} or conftest_data_choices",
        "-W",
        "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning",
    )
    without_runslow.assert_outcomes(passed=1, skipped=1)


def test_an_old_driver_is_named_in_the_error_not_raised_as_a_warning(
    pytester: pytest.Pytester, isolated_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch warns at torch.cuda.is_available() when the driver is too old for its CUDA; with
    warnings as errors that would be a collection error, even with skips allowed."""

    def old_driver() -> bool:
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version 11040). "
            "Please update your GPU driver",
            UserWarning,
            stacklevel=1,
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", old_driver)
    failed = run_tier(pytester, "--sgdwalk-profile", "smoke")
    assert failed.ret == pytest.ExitCode.USAGE_ERROR
    failed.stderr.fnmatch_lines(["ERROR: gpu tier cannot run here: no CUDA device (*driver on your system is too old*"])
    skipped = run_tier(pytester, "--sgdwalk-profile", "smoke", "--sgdwalk-gpu-allow-skip")
    skipped.assert_outcomes(skipped=1)
