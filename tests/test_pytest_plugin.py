"""The sgdwalk pytest plugin, tested as pytest-benchmark tests its own: tiny test files run
by ``pytester`` (in-process unless marked otherwise), matching output lines and reports."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from sgdwalk.claims.pytest_plugin import ClaimRecorder, parse_seeds
from sgdwalk.claims.registry import CLAIMS, get_claim
from sgdwalk.claims.report import ClaimEntry, load_report

pytest_plugins = ["pytester"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# The project's own pytest settings, so inner runs are as strict as the real suite.
PROJECT_INI = """
[pytest]
addopts = --strict-markers --strict-config -ra
xfail_strict = true
filterwarnings =
    error
    # In-process runs re-load the already imported, entry-point-registered package; pytest
    # can then not rewrite its asserts (it depends on how the package was installed).
    ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning
"""


def plugin_args() -> list[str]:
    """``-p sgdwalk.claims.pytest_plugin`` only when pytest will not load the entry point itself.

    Loading it both ways registers the same module under two names, which pluggy refuses
    ("Plugin already registered under a different name").
    """
    installed = any(point.name == "sgdwalk" for point in entry_points(group="pytest11"))
    autoload = not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    return [] if installed and autoload else ["-p", "sgdwalk.claims.pytest_plugin"]


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester folder with the project's ini; subprocess runs can import sgdwalk."""
    pytester.makeini(PROJECT_INI)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("SGDWALK_DATA_ROOT", raising=False)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*plugin_args(), *args)


def write_test(pytester: pytest.Pytester, relative_path: str, source: str) -> Path:
    path = pytester.path / relative_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return path


def entries_by_name(report_path: Path) -> dict[str, ClaimEntry]:
    """Report entries keyed by the test function's name (the node id's last part)."""
    return {entry.test.rsplit("::", 1)[-1]: entry for entry in load_report(report_path).claims}


# A suite folder's conftest.py declaring the tier of the claim tests under it.
TIER_CONFTEST = """
import pytest

def pytest_sgdwalk_tier(item: pytest.Item) -> str:
    return {tier!r}
"""


CLAIM_TESTS = """
import pytest

@pytest.mark.claim("C3")
def test_pass(claim):
    claim.setting(lr=0.1, batch=64, seeds=[0, 1])
    claim.check("mean_cosine_gap", 0.123, 0.0, ">", interval=(0.05, 0.2))

@pytest.mark.claim("C4")
def test_fail(claim):
    claim.check("lr_over_batch_effect", 0.5, 0.2, "<")
    claim.check("never_reached", 1.0, 0.0, ">")

@pytest.mark.claim("C9")
@pytest.mark.xfail(strict=True, reason="measured: the noisy run does not stall")
def test_xfail(claim):
    claim.setting(noise_scale=0.02)
    claim.check("train_loss_gap", 0.25, 0.0, ">=")
    claim.check("loss_gap", -0.1, 0.0, ">")

@pytest.mark.claim("C10")
@pytest.mark.xfail(strict=True, reason="thought not to reproduce")
def test_xpass(claim):
    claim.check("sharpness_drop", 1.0, 0.0, ">")

@pytest.mark.claim("C11")
def test_skipped(claim):
    pytest.skip("no data")

def test_not_a_claim():
    pass
"""


# --------------------------------------------------------------------------- options


def test_help_lists_every_option_with_its_default(project: pytest.Pytester) -> None:
    result = run(project, "--help")
    lines = result.stdout.lines
    start = lines.index("sgdwalk: claims of 'A Walk with SGD':")
    group = lines[start + 1 : lines.index("", start)]
    # One chunk per option: its flag line and the wrapped help lines under it.
    chunks: dict[str, str] = {}
    for line in group:
        if line.startswith("  --"):
            flag = line.split()[0].split("=")[0]
            chunks[flag] = line
        else:
            chunks[flag] += " " + line.strip()
    assert set(chunks) == {
        "--sgdwalk-report",
        "--sgdwalk-device",
        "--sgdwalk-profile",
        "--sgdwalk-data-root",
        "--sgdwalk-seeds",
    }
    for flag, text in chunks.items():
        assert "(default:" in text, f"{flag}: help must end with its default: {text!r}"


def test_the_plugin_registers_only_its_own_marker(project: pytest.Pytester) -> None:
    result = run(project, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.claim(id, statement=None):*"])
    # slow and gpu are suite policy: each project's own conftest registers them (or not).
    result.stdout.no_fnmatch_line("@pytest.mark.slow:*")
    result.stdout.no_fnmatch_line("@pytest.mark.gpu:*")


def test_the_plugin_owns_no_option_outside_its_prefix(project: pytest.Pytester) -> None:
    result = run(project, "--help")
    lines = result.stdout.lines
    start = lines.index("sgdwalk: claims of 'A Walk with SGD':")
    flags = [
        line.split()[0].split("=")[0] for line in lines[start + 1 : lines.index("", start)] if line.startswith("  --")
    ]
    assert flags and all(flag.startswith("--sgdwalk-") for flag in flags), flags
    assert "--runslow" not in result.stdout.str()


# pytest's documented recipe ("Control skipping of tests according to command line option"),
# as a project that installs sgdwalk may well have it in its own conftest.py.
FOREIGN_RUNSLOW_CONFTEST = """
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: mark test as slow to run")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="need --runslow option to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
"""

SLOW_AND_FAST = """
import pytest

@pytest.mark.slow
def test_slow():
    pass

def test_fast():
    pass
"""


def test_a_foreign_project_with_its_own_runslow_recipe_runs_with_the_plugin(project: pytest.Pytester) -> None:
    project.makeconftest(FOREIGN_RUNSLOW_CONFTEST)
    project.makepyfile(SLOW_AND_FAST)
    result = run(project)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*need --runslow option to run*"])
    result.stdout.no_fnmatch_line("*conflicting option string*")
    run(project, "--runslow").assert_outcomes(passed=2)
    # The plugin is loaded: its own option is there beside the project's.
    run(project, "--runslow", "--sgdwalk-report", "ledger.json").assert_outcomes(passed=2)


def test_a_project_without_a_runslow_recipe_runs_its_slow_tests(project: pytest.Pytester) -> None:
    # Installing sgdwalk no longer skips anyone's slow-marked tests.
    project.makeini(PROJECT_INI.replace("[pytest]", "[pytest]\nmarkers = slow: a project's own marker"))
    project.makepyfile(SLOW_AND_FAST)
    run(project).assert_outcomes(passed=2)


def use_the_repository_suite_policy(pytester: pytest.Pytester) -> None:
    """The repository's root conftest.py (``--runslow``, the slow and gpu markers) in ``pytester``."""
    pytester.makeconftest((REPO_ROOT / "conftest.py").read_text(encoding="utf-8"))


def test_the_repository_runslow_skips_slow_tests_unless_given(project: pytest.Pytester) -> None:
    use_the_repository_suite_policy(project)
    project.makepyfile(SLOW_AND_FAST)
    result = run(project)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*slow: needs --runslow*"])
    run(project, "--runslow").assert_outcomes(passed=2)
    run(project, "--runslow", "-m", "slow").assert_outcomes(passed=1, deselected=1)
    run(project, "--markers").stdout.fnmatch_lines(["@pytest.mark.slow:*", "@pytest.mark.gpu:*"])


def test_option_fixtures(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data_root_from_env = tmp_path / "from_env"
    monkeypatch.setenv("SGDWALK_DATA_ROOT", str(data_root_from_env))
    project.makepyfile(
        f"""
        from pathlib import Path

        def test_defaults(sgdwalk_device, sgdwalk_profile, sgdwalk_data_root):
            assert sgdwalk_device.type == "cpu"
            assert sgdwalk_profile is None
            assert sgdwalk_data_root == Path({str(data_root_from_env)!r})
        """
    )
    run(project, "--sgdwalk-device", "cpu").assert_outcomes(passed=1)
    project.makepyfile(
        """
        from pathlib import Path

        def test_given(sgdwalk_profile, sgdwalk_data_root):
            assert sgdwalk_profile == "tiny"
            assert sgdwalk_data_root == Path("/data/cifar")
        """
    )
    run(project, "--sgdwalk-profile", "tiny", "--sgdwalk-data-root", "/data/cifar").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("2001-2005", (2001, 2002, 2003, 2004, 2005)), ("7,3, 5", (7, 3, 5)), ("0", (0,)), ("1-2,9", (1, 2, 9))],
)
def test_seeds_are_a_range_or_a_list(text: str, seeds: tuple[int, ...]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'' is not a seed or a range"),
        ("2001..2005", "is not a seed or a range"),
        ("-3", "is not a seed or a range"),
        ("1,,2", "'' is not a seed or a range"),
        ("\u0661", "is not a seed or a range"),  # an Arabic-Indic digit, which int() would take
        ("2005-2001", "runs backwards"),
        ("1,2,1-3", r"seeds \[1, 2\] are given more than once"),
        (str(2**63), "seeds go from 0 to"),
        ("2001-20005", "more than 1000 seeds"),
    ],
)
def test_bad_seeds_are_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_seeds_option_is_recorded_in_the_report_or_a_one_line_usage_error(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.claim("C3")
        def test_seeded(claim, sgdwalk_seeds):
            claim.setting(seeds=list(sgdwalk_seeds or ()))
        """
    )
    run(project, "--sgdwalk-seeds", "2001-2003", "--sgdwalk-report", "seeded.json").assert_outcomes(passed=1)
    seeded = load_report(project.path / "seeded.json")
    assert seeded.settings == {"seeds": [2001, 2002, 2003]}
    assert seeded.claims[0].setting == {"seeds": [2001, 2002, 2003]}
    run(project, "--sgdwalk-report", "plain.json").assert_outcomes(passed=1)
    assert "settings" not in json.loads((project.path / "plain.json").read_text(encoding="utf-8"))
    result = run(project, "--sgdwalk-seeds", "2005-2001", "--sgdwalk-report", "bad.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert errors == [
        "ERROR: --sgdwalk-seeds '2005-2001': the range 2005-2001 runs backwards; "
        "give a range (2001-2005) or a list (2001,2002,2003)"
    ]
    assert not (project.path / "bad.json").exists()


def test_auto_device_is_cuda_only_when_available(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import torch

        def test_auto(sgdwalk_device):
            expected = "cuda" if torch.cuda.is_available() else "cpu"
            assert sgdwalk_device.type == expected
        """
    )
    run(project).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('claim("C99")', "*unknown claim id 'C99'; known ids: C1, C2,*claim('C99', statement='...')*"),
        ("claim()", "*takes one claim id*got args=()*"),
        ('claim("C1", "C2")', "*takes one claim id*got args=('C1', 'C2')*"),
        ('claim(id="C1")', "*takes one claim id*kwargs={'id': 'C1'}*"),
        ("claim(3)", "*takes one claim id*got args=(3,)*"),
        ('claim("W1", statement="")', "*takes one claim id*statement*"),
        ('claim("C3", statement="mine")', "*C3 is one of sgdwalk's registered claims*an id of its own*"),
    ],
)
def test_invalid_claim_marker_is_a_usage_error(project: pytest.Pytester, marker: str, message: str) -> None:
    project.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_marked():
            pass
        """
    )
    # -k deselects the test: the marker is still checked, it cannot hide behind a filter.
    result = run(project, "-k", "nothing_matches", "--sgdwalk-report", "report.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: invalid claim marker:", f"*test_marked: {message}"])
    assert not (project.path / "report.json").exists()


def test_a_claim_of_the_projects_own_is_reported_with_its_statement(project: pytest.Pytester) -> None:
    # A user's suite had to borrow one of C1-X3, and its report then carried the paper's
    # statement for a claim it did not make (found by a second pair of eyes).
    project.makepyfile(
        """
        import pytest

        @pytest.mark.claim("W1", statement="warmup lowers the early height")
        def test_warmup(claim):
            claim.check("height drop", 0.3, 0.0, ">")
        """
    )
    result = run(project, "--sgdwalk-report", "report.json")
    result.assert_outcomes(passed=1)
    (entry,) = json.loads((project.path / "report.json").read_text())["claims"]
    assert (entry["id"], entry["statement"], entry["outcome"]) == ("W1", "warmup lowers the early height", "passed")


def test_two_claim_markers_are_rejected(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.claim("C1")
        class TestBoth:
            @pytest.mark.claim("C2")
            def test_marked(self):
                pass
        """
    )
    result = run(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_marked: one claim marker per test, found 2*"])


def test_claim_fixture_needs_a_claim_marker(project: pytest.Pytester) -> None:
    project.makepyfile("def test_unmarked(claim):\n    pass\n")
    result = run(project)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the claim fixture needs @pytest.mark.claim('<id>') on the test*"])


# --------------------------------------------------------------------------- check and report


def test_check_lines_outcomes_and_report(project: pytest.Pytester) -> None:
    write_test(project, "suites/quick/conftest.py", TIER_CONFTEST.format(tier="synthetic"))
    write_test(project, "suites/quick/test_claims.py", CLAIM_TESTS)
    result = run(project, "-s", "--sgdwalk-report", "out/nested/report.json")
    result.assert_outcomes(passed=2, failed=2, skipped=1, xfailed=1)
    # One line per check, printed as it is made (-s shows them live).
    result.stdout.fnmatch_lines(
        [
            "*C3 mean_cosine_gap = 0.123 [[]0.05, 0.2[]] > 0 PASS*",
            "*C4 lr_over_batch_effect = 0.5 < 0.2 FAIL*",
            "*C9 train_loss_gap = 0.25 >= 0 PASS*",
            "*C9 loss_gap = -0.1 > 0 FAIL*",
        ]
    )
    result.stdout.no_fnmatch_line("*never_reached*")
    # A failing check raises AssertionError with the same line, at the test's own line.
    result.stdout.fnmatch_lines(["E       AssertionError: C4 lr_over_batch_effect = 0.5 < 0.2 FAIL"])

    report_path = project.path / "out" / "nested" / "report.json"
    # Strict JSON: no NaN/Infinity tokens.
    json.loads(report_path.read_text(encoding="utf-8"), parse_constant=lambda token: pytest.fail(token))
    report = load_report(report_path)
    assert report.versions["python"] and report.versions["pytest"] == pytest.__version__
    assert "--sgdwalk-report" in report.pytest_args
    entries = entries_by_name(report_path)
    assert set(entries) == {"test_pass", "test_fail", "test_xfail", "test_xpass", "test_skipped"}

    passed = entries["test_pass"]
    assert (passed.id, passed.outcome, passed.tier, passed.device) == (
        "C3",
        "passed",
        "synthetic",
        "cpu",
    )
    assert passed.test == "suites/quick/test_claims.py::test_pass"
    assert passed.statement == CLAIMS["C3"].statement
    assert passed.setting == {"lr": 0.1, "batch": 64, "seeds": [0, 1]}
    (statistic,) = passed.statistics
    assert (statistic.name, statistic.value, statistic.interval) == (
        "mean_cosine_gap",
        0.123,
        (0.05, 0.2),
    )
    assert (statistic.relation, statistic.bound, statistic.held) == (">", 0.0, True)
    assert passed.duration_s >= 0.0

    failed = entries["test_fail"]
    assert failed.outcome == "failed"
    assert failed.reason == "AssertionError: C4 lr_over_batch_effect = 0.5 < 0.2 FAIL"
    assert [s.name for s in failed.statistics] == ["lr_over_batch_effect"]

    # Strict xfail: the statistics measured before the failing check are kept.
    xfailed = entries["test_xfail"]
    assert (xfailed.outcome, xfailed.reason) == (
        "xfailed",
        "measured: the noisy run does not stall",
    )
    assert [(s.name, s.held) for s in xfailed.statistics] == [
        ("train_loss_gap", True),
        ("loss_gap", False),
    ]
    assert xfailed.setting == {"noise_scale": 0.02}

    xpassed = entries["test_xpass"]
    assert (xpassed.outcome, xpassed.reason) == ("xpassed", "thought not to reproduce")
    assert xpassed.statistics[0].held

    skipped = entries["test_skipped"]
    assert (skipped.outcome, skipped.reason) == ("skipped", "no data")


def test_under_xdist_the_controller_writes_the_report_one_process_writes(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    write_test(project, "suites/quick/conftest.py", TIER_CONFTEST.format(tier="synthetic"))
    write_test(project, "suites/quick/test_claims.py", CLAIM_TESTS)
    one = run(project, "--sgdwalk-report", "one.json")
    spread = run(project, "-n", "2", "--sgdwalk-report", "spread.json")
    spread.assert_outcomes(passed=2, failed=2, skipped=1, xfailed=1)
    # The workers' entries reach the controller whole: the same ledger, timings aside.
    alike = {
        name: dataclasses.replace(entry, duration_s=0.0)
        for name, entry in entries_by_name(project.path / "one.json").items()
    }
    assert alike == {
        name: dataclasses.replace(entry, duration_s=0.0)
        for name, entry in entries_by_name(project.path / "spread.json").items()
    }
    assert len(alike) == 5
    spread.stdout.fnmatch_lines(["*sgdwalk claims*", "*C3*test_pass*mean_cosine_gap*passed*"])
    assert one.ret == spread.ret


def test_terminal_table_lists_each_claim_test(project: pytest.Pytester) -> None:
    write_test(project, "test_claims.py", CLAIM_TESTS)
    result = run(project, "--sgdwalk-report", "report.json")
    result.stdout.fnmatch_lines(
        [
            "*= sgdwalk claims =*",
            "claim*test*statistic*outcome",
            "C3 *test_claims.py::test_pass *mean_cosine_gap = 0.123 [[]0.05, 0.2[]] > 0 PASS *passed",
            "C4 *test_claims.py::test_fail *lr_over_batch_effect = 0.5 < 0.2 FAIL *failed: AssertionError*",
            "C9 *test_claims.py::test_xfail *loss_gap = -0.1 > 0 FAIL (+1 more) *xfailed: measured*",
            "C10 *test_claims.py::test_xpass *sharpness_drop = 1 > 0 PASS *xpassed: thought not*",
            "C11 *test_claims.py::test_skipped *- *skipped: no data",
            "claims report written to *report.json",
        ]
    )
    result.stdout.no_fnmatch_line("*test_not_a_claim*")


def test_no_table_and_empty_report_without_claim_tests(project: pytest.Pytester) -> None:
    project.makepyfile("def test_plain():\n    pass\n")
    result = run(project, "--sgdwalk-report", "report.json")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*sgdwalk claims*")
    assert load_report(project.path / "report.json").claims == ()


def test_no_report_without_the_option(project: pytest.Pytester) -> None:
    write_test(project, "test_claims.py", CLAIM_TESTS)
    result = run(project)
    result.stdout.no_fnmatch_line("*claims report written*")
    assert not list(project.path.rglob("*.json"))


def test_slow_claim_skipped_before_setup_is_recorded(project: pytest.Pytester) -> None:
    use_the_repository_suite_policy(project)
    project.makepyfile(
        """
        import pytest

        @pytest.mark.slow
        @pytest.mark.claim("C7")
        def test_barriers(claim, sgdwalk_device):
            claim.check("crossings", 0, 0, "<=")
        """
    )
    run(project, "--sgdwalk-report", "skipped.json", "--sgdwalk-device", "cuda").assert_outcomes(skipped=1)
    (entry,) = load_report(project.path / "skipped.json").claims
    # The device fixture never ran: the report says what was asked for.
    assert (entry.outcome, entry.reason, entry.device, entry.statistics) == (
        "skipped",
        "slow: needs --runslow",
        "cuda",
        (),
    )
    run(project, "--runslow", "--sgdwalk-report", "ran.json", "--sgdwalk-device", "cpu").assert_outcomes(passed=1)
    (entry,) = load_report(project.path / "ran.json").claims
    assert (entry.outcome, entry.device, entry.statistics[0].value) == ("passed", "cpu", 0.0)


@pytest.mark.slow  # a pytester project run in a subprocess
def test_a_foreign_project_declares_its_tiers_in_its_conftests(project: pytest.Pytester) -> None:
    # A layout of this project's own: the plugin knows no folder names.
    body = '\nimport pytest\n\n@pytest.mark.claim("S1")\ndef test_{name}(claim):\n    {extra}\n'
    write_test(project, "checks/analytic/conftest.py", TIER_CONFTEST.format(tier="synthetic"))
    write_test(project, "checks/analytic/test_a.py", body.format(name="analytic", extra="pass"))
    write_test(project, "checks/analytic/deeper/test_d.py", body.format(name="deeper", extra="pass"))
    write_test(project, "checks/cuda/conftest.py", TIER_CONFTEST.format(tier="gpu"))
    write_test(project, "checks/cuda/test_c.py", body.format(name="cuda", extra="pass"))
    # This repository's folder names, with no conftest.py that declares a tier there.
    write_test(project, "suites/real/test_r.py", body.format(name="undeclared", extra="pass"))
    write_test(project, "tests/test_o.py", body.format(name="override", extra='claim.tier = "real"'))
    run(project, "--sgdwalk-report", "report.json").assert_outcomes(passed=5)
    tiers = {name: entry.tier for name, entry in entries_by_name(project.path / "report.json").items()}
    assert tiers == {
        "test_analytic": "synthetic",
        "test_deeper": "synthetic",
        "test_cuda": "gpu",
        "test_undeclared": "unit",
        "test_override": "real",
    }


def test_the_tier_of_a_test_skipped_before_setup_is_declared_too(project: pytest.Pytester) -> None:
    write_test(project, "checks/conftest.py", TIER_CONFTEST.format(tier="real"))
    write_test(
        project,
        "checks/test_skipped.py",
        '\nimport pytest\n\n@pytest.mark.skip(reason="no data")\n@pytest.mark.claim("C3")\ndef test_c3(claim):\n    pass\n',
    )
    run(project, "--sgdwalk-report", "report.json").assert_outcomes(skipped=1)
    (entry,) = load_report(project.path / "report.json").claims
    assert (entry.outcome, entry.tier) == ("skipped", "real")


def test_an_unknown_tier_is_a_usage_error(project: pytest.Pytester) -> None:
    write_test(project, "checks/conftest.py", TIER_CONFTEST.format(tier="cloud"))
    write_test(
        project, "checks/test_c.py", '\nimport pytest\n\n@pytest.mark.claim("S1")\ndef test_s1(claim):\n    pass\n'
    )
    result = run(project)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*invalid tier:*", "*test_s1: pytest_sgdwalk_tier gave 'cloud'; a tier is one of unit, *"]
    )


@pytest.mark.parametrize("baseline", sorted((REPO_ROOT / "suites" / "baselines").glob("*.json")), ids=lambda p: p.stem)
def test_the_suites_declare_the_tiers_of_their_baselines(baseline: Path) -> None:
    """Each suite folder's conftest.py gives the tier its stored baseline carries."""
    declared: dict[str, str] = {}
    for entry in load_report(baseline).claims:
        folder = entry.test.split("::")[0].rsplit("/", 1)[0]
        if folder not in declared:
            conftest = (REPO_ROOT / folder / "conftest.py").read_text(encoding="utf-8")
            # The hook's return statement (it answers the same for every item), read without importing.
            match = re.search(r'def pytest_sgdwalk_tier\b.*?return "(\w+)"', conftest, re.DOTALL)
            assert match is not None, f"{folder}/conftest.py declares no tier"
            declared[folder] = match.group(1)
        assert entry.tier == declared[folder], entry.test


def test_non_finite_statistic_stays_strict_json(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.claim("X1")
        def test_nan(claim):
            claim.note("the run diverged")
            claim.check("sharpness_ratio", float("nan"), 1.0, "<")
        """
    )
    run(project, "--sgdwalk-report", "report.json").assert_outcomes(failed=1)
    text = (project.path / "report.json").read_text(encoding="utf-8")
    assert '"value": "nan"' in text
    (entry,) = load_report(project.path / "report.json").claims
    assert math.isnan(entry.statistics[0].value) and not entry.statistics[0].held
    assert entry.notes == ("the run diverged",)


def test_parametrised_claims_as_data(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        CASES = [
            pytest.param("S1", 0.9, id="damping", marks=pytest.mark.claim("S1")),
            pytest.param("S2", 0.95, id="cosine", marks=pytest.mark.claim("S2")),
        ]

        @pytest.mark.parametrize(("claim_id", "agreement"), CASES)
        def test_closed_form(claim, claim_id, agreement):
            assert claim.id == claim_id
            claim.check("agreement", agreement, 0.8, ">")
        """
    )
    run(project, "--sgdwalk-report", "report.json").assert_outcomes(passed=2)
    entries = entries_by_name(project.path / "report.json")
    assert {name: entry.id for name, entry in entries.items()} == {
        "test_closed_form[damping]": "S1",
        "test_closed_form[cosine]": "S2",
    }


# The plugin's own modules, imported under a bare `sgdwalk` package so that the package's
# __init__ (which re-exports the torch-based API) does not hide what they import.
LIGHT_IMPORT_CHECK = """
import sys, types
package = types.ModuleType("sgdwalk")
package.__path__ = [sys.argv[1]]
sys.modules["sgdwalk"] = package
import sgdwalk.claims.pytest_plugin, sgdwalk.claims.registry, sgdwalk.claims.report, sgdwalk.cli.commands.claims
heavy = sorted(name for name in ("torch", "numpy", "scipy", "pandas") if name in sys.modules)
print(",".join(heavy))
"""


def test_plugin_modules_do_not_import_torch() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", LIGHT_IMPORT_CHECK, str(REPO_ROOT / "sgdwalk")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.strip() == "", f"imported at plugin load: {completed.stdout.strip()}"


@pytest.mark.slow
def test_pytest_startup_does_not_import_torch(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import sys
        import pytest

        @pytest.mark.claim("C1")
        def test_no_torch(claim):
            claim.check("torch_modules", float("torch" in sys.modules), 0.0, "<=")
        """
    )
    result = project.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_entry_point_or_explicit_plugin_loads_once_in_a_subprocess(
    project: pytest.Pytester,
) -> None:
    write_test(project, "suites/quick/test_claims.py", CLAIM_TESTS)
    result = project.runpytest_subprocess(*plugin_args(), "--sgdwalk-report", "report.json")
    result.assert_outcomes(passed=2, failed=2, skipped=1, xfailed=1)
    assert len(load_report(project.path / "report.json").claims) == 5


# --------------------------------------------------------------------------- ClaimRecorder


@pytest.fixture
def recorder() -> ClaimRecorder:
    return ClaimRecorder(get_claim("C3"), "unit")


def test_check_records_prints_and_passes(recorder: ClaimRecorder, capsys: pytest.CaptureFixture[str]) -> None:
    recorder.check("gap", 0.2, 0.2, ">=", detail="8 seeds")
    assert capsys.readouterr().out == "C3 gap = 0.2 >= 0.2 PASS (8 seeds)\n"
    assert recorder.statistics[0].held


@pytest.mark.parametrize(
    ("value", "relation", "bound", "held"),
    [
        (1.0, "<", 2.0, True),
        (2.0, "<", 2.0, False),
        (2.0, "<=", 2.0, True),
        (3.0, ">", 2.0, True),
        (2.0, ">", 2.0, False),
        (2.0, ">=", 2.0, True),
        (math.nan, ">=", 0.0, False),
    ],
)
def test_check_relations(recorder: ClaimRecorder, value: float, relation: str, bound: float, held: bool) -> None:
    if held:
        recorder.check("x", value, bound, relation)
    else:
        with pytest.raises(AssertionError, match=r"^C3 x = .* FAIL$"):
            recorder.check("x", value, bound, relation)
    assert recorder.statistics[-1].held is held


def test_check_rejects_an_unknown_relation(recorder: ClaimRecorder) -> None:
    with pytest.raises(ValueError, match="relation must be one of"):
        recorder.check("x", 1.0, 0.0, "==")
    assert recorder.statistics == []


def test_setting_accepts_json_and_scalars_and_rejects_objects(recorder: ClaimRecorder) -> None:
    numpy = pytest.importorskip("numpy")
    recorder.setting(arch="mlp", lr=numpy.float32(0.5), steps=numpy.int64(100), data=Path("/d"), seeds=(1, 2))
    recorder.setting(bn_mode="train")
    assert recorder.setting_values == {
        "arch": "mlp",
        "lr": 0.5,
        "steps": 100,
        "data": "/d",
        "seeds": [1, 2],
        "bn_mode": "train",
    }
    with pytest.raises(TypeError, match="claim setting 'model'"):
        recorder.setting(model=object())


def test_claim_identity_and_tier(recorder: ClaimRecorder) -> None:
    assert (recorder.id, recorder.statement, recorder.tier) == (
        "C3",
        CLAIMS["C3"].statement,
        "unit",
    )
    recorder.tier = "gpu"
    assert recorder.tier == "gpu"
    with pytest.raises(ValueError, match="tier must be one of"):
        recorder.tier = "cloud"


def test_registry() -> None:
    assert list(CLAIMS) == [
        *(f"C{index}" for index in range(1, 12)),
        *(f"S{index}" for index in range(1, 10)),
        "X1",
        "X2",
        "X3",
    ]
    assert all(claim.statement and claim.source for claim in CLAIMS.values())
    with pytest.raises(KeyError, match="unknown claim id 'C12'; known ids: C1, C2"):
        get_claim("C12")
    with pytest.raises(TypeError):
        CLAIMS["C12"] = CLAIMS["C1"]  # type: ignore[index]  # deliberately: the registry is read-only
