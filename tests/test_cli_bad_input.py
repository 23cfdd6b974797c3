"""Every setting of ``sgdwalk walk``, given badly, as a flag and as a config key: exit 2, one
line on stderr that names the setting, no traceback, nothing written.

The cases are made from the parser's flags and ``WalkConfig``'s fields (their annotations say
the kind of value), so a new field is covered without touching this file. The CLI runs
in-process through ``main(argv)``; every refusal must come before the data are loaded, and
the runner is replaced by a function that fails the test if a bad setting reaches it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from sgdwalk.cli import build_parser, main
from sgdwalk.cli.exits import EXIT_USAGE
from sgdwalk.runs import launched_walk
from sgdwalk.training.config import WalkConfig

# ------------------------------------------------------------------------- the kinds
# What kind of value each annotation of WalkConfig asks for (the config checks the same).
CHOICE_KINDS = frozenset(
    {
        "OptimizerName",
        "LRScheduleName",
        "DeviceName",
        "MeasurementMode",
        "BatchNormMode",
        "MeasurementPrecision",
        "OffloadTarget",
    }
)
# Fields whose values are names chosen from a list, though annotated as plain strings.
NAMED_CHOICES = frozenset({"arch", "data"})


def kind_of(name: str) -> str:
    """bool, int, float, choice, text, int-list or windows, from the field's annotation."""
    (spec,) = (spec for spec in fields(WalkConfig) if spec.name == name)
    annotation = str(spec.type)
    if annotation.startswith("tuple[tuple"):
        return "windows"
    if annotation.startswith("tuple[int"):
        return "int-list"
    kinds = {part.strip() for part in annotation.split("|")} - {"None"}
    (kind,) = kinds
    if kind in CHOICE_KINDS or name in NAMED_CHOICES:
        return "choice"
    if kind == "str":
        return "text"
    if kind in ("bool", "int", "float"):
        return kind
    raise AssertionError(f"WalkConfig.{name}: annotation {annotation!r} has no bad-input cases yet; add its kind")


def optional(name: str) -> bool:
    (spec,) = (spec for spec in fields(WalkConfig) if spec.name == name)
    return "None" in str(spec.type)


def walk_flags() -> dict[str, str]:
    """{field: its flag} as the walk parser defines them."""
    parser = build_parser()
    (subparsers,) = (action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    walk = subparsers.choices["walk"]
    flags = {}
    for action in walk._actions:
        long_flags = [flag for flag in action.option_strings if flag.startswith("--") and not flag.startswith("--no-")]
        if action.dest in {spec.name for spec in fields(WalkConfig)} and long_flags:
            flags[action.dest] = long_flags[0]
    return flags


FLAGS = walk_flags()
FIELD_NAMES = tuple(spec.name for spec in fields(WalkConfig))


def flag_cases(name: str) -> Iterator[tuple[str, list[str]]]:
    """(what is wrong, the flags) for one field."""
    flag, kind = FLAGS[name], kind_of(name)
    if kind == "bool":
        yield "a value given to a switch", [f"{flag}=yes"]
        return
    if kind in ("int", "float"):
        yield "wrong type", [flag, "abc"]
        yield "out of range", [f"{flag}=-1"]
        yield "non-finite inf", [flag, "inf"]
        yield "non-finite nan", [flag, "nan"]
        yield "non-finite -inf", [f"{flag}=-inf"]
        # An empty optional integer is documented as "none" (like 0); every other number needs one.
        if not (kind == "int" and optional(name)):
            yield "empty", [flag, ""]
        if kind == "int":
            yield "a fraction", [flag, "2.5"]
    elif kind == "choice":
        yield "not one of the choices", [flag, "nonsense"]
        yield "empty", [flag, ""]
    elif kind == "text":
        yield "empty", [flag, ""]
    elif kind == "int-list":
        yield "wrong type", [flag, "1,x"]
        yield "out of range", [flag, "0"]
        yield "a fraction", [flag, "1.5"]
    elif kind == "windows":
        yield "wrong type", [flag, "a:b"]
        yield "out of range", [flag, "5:2"]
        yield "not a window", [flag, "3"]


def config_cases(name: str) -> Iterator[tuple[str, Any]]:
    """(what is wrong, the value in a TOML config) for one field."""
    kind = kind_of(name)
    if kind == "bool":
        yield from [("wrong type", "yes"), ("a number", 1), ("empty", "")]
    elif kind in ("int", "float"):
        yield from [("wrong type", "abc"), ("a switch", True), ("out of range", -1), ("empty", "")]
        yield from [("non-finite inf", math.inf), ("non-finite nan", math.nan), ("non-finite -inf", -math.inf)]
        if kind == "int":
            yield "a fraction", 2.5
    elif kind in ("choice", "text"):
        yield from [("wrong type", 5), ("empty", "")]
        if kind == "choice":
            yield "not one of the choices", "nonsense"
    elif kind == "int-list":
        yield from [("wrong type", "x"), ("a number", 5), ("out of range", [0]), ("a fraction", [1.5])]
        yield "strings", ["1"]
    elif kind == "windows":
        yield from [("wrong type", "x"), ("out of range", [[5, 2]]), ("a fraction", [[0, 1.5]]), ("a number", 5)]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


FLAG_CASES = [(name, what, argv) for name in FIELD_NAMES if name in FLAGS for what, argv in flag_cases(name)]
CONFIG_CASES = [(name, what, value) for name in FIELD_NAMES for what, value in config_cases(name)]


# ----------------------------------------------------------------------------- running
@pytest.fixture
def no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own (a default run directory would land here), and a runner
    that fails the test when a setting gets past validation."""

    def reached(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a bad setting reached the runner")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(launched_walk, "run_walk", reached)
    monkeypatch.setattr(launched_walk, "resume_walk", reached)
    return tmp_path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of ``sgdwalk ARGV`` run in this process."""
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's refusals
        code = int(exit_info.code or 0)
    return code, capsys.readouterr().err.splitlines()


def assert_one_line_usage_error(code: int, lines: list[str], names: tuple[str, ...]) -> None:
    assert code == EXIT_USAGE, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    assert any(name in lines[0] for name in names), f"{lines[0]!r} names none of {names}"


def written(directory: Path, *expected: str) -> list[str]:
    """What is in ``directory`` besides ``expected`` (a run directory, a default runs/ folder)."""
    return sorted(path.name for path in directory.iterdir() if path.name not in expected)


# ------------------------------------------------------------------------------- tests
def test_every_field_has_a_flag_but_the_run_directory_which_has_out() -> None:
    assert set(FIELD_NAMES) == set(FLAGS)
    assert FLAGS["out_dir"] == "--out"


@pytest.mark.parametrize(("name", "what", "argv"), FLAG_CASES, ids=[f"{n}-{w}" for n, w, _ in FLAG_CASES])
def test_a_bad_flag_is_one_line_and_exit_2(
    name: str, what: str, argv: list[str], no_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out", str(no_run / "run")] if name != "out_dir" else []
    code, lines = run_cli(["walk", *argv, *out], capsys)
    assert_one_line_usage_error(code, lines, (name, FLAGS[name]))
    assert written(no_run) == []


@pytest.mark.parametrize(("name", "what", "value"), CONFIG_CASES, ids=[f"{n}-{w}" for n, w, _ in CONFIG_CASES])
def test_a_bad_config_value_is_one_line_and_exit_2(
    name: str, what: str, value: Any, no_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = no_run / "c.toml"
    config.write_text(f"{name} = {toml_value(value)}\n", encoding="utf-8")
    out = ["--out", str(no_run / "run")] if name != "out_dir" else []
    code, lines = run_cli(["walk", "--config", str(config), *out], capsys)
    assert_one_line_usage_error(code, lines, (name,))
    assert written(no_run, "c.toml") == []


# Bad input as users typed it.
@pytest.mark.parametrize(
    ("argv", "config", "names"),
    [
        (["--width-multiplier", "inf"], None, ("width_multiplier",)),
        (["--seed", "99999999999999999999999"], None, ("seed",)),
        ([], "out_dir = 5", ("out_dir",)),
        ([], "data_root = 5", ("data_root",)),
        ([], 'weight_decay = "x"', ("weight_decay",)),
        (["--lr", "inf"], None, ("lr",)),
        ([], "weight_decay = nan", ("weight_decay",)),
        (["--data-root", "/nonexistent"], None, ("data_root",)),
        (["--train-subset", "2000", "--measurement-size", "5000"], None, ("measurement_size",)),
        ([], "batch_size = 100.0\nepochs = 1\ntrack_epochs = [1]", ("batch_size",)),
    ],
    ids=[
        "inf-width",
        "huge-seed",
        "int-out-dir",
        "int-data-root",
        "text-weight-decay",
        "inf-lr",
        "nan-weight-decay",
        "missing-data-root",
        "measurement-above-subset",
        "float-batch",
    ],
)
def test_the_cases_of_issue_11_are_one_line_and_exit_2(
    argv: list[str], config: str | None, names: tuple[str, ...], no_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_flags = []
    if config is not None:
        (no_run / "c.toml").write_text(config + "\n", encoding="utf-8")
        config_flags = ["--config", str(no_run / "c.toml")]
    code, lines = run_cli(["walk", *argv, *config_flags], capsys)
    assert_one_line_usage_error(code, lines, names)
    assert written(no_run, "c.toml") == []


def test_a_data_root_to_download_into_may_not_exist_yet(no_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AssertionError, match="reached the runner"):
        main(["walk", "--data-root", str(no_run / "new"), "--download", "--out", str(no_run / "run")])


def test_a_config_file_that_is_not_utf8_is_one_line_and_exit_2(
    no_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = no_run / "c.toml"
    config.write_bytes(b"\xff")
    code, lines = run_cli(["walk", "--config", str(config)], capsys)
    assert_one_line_usage_error(code, lines, ("config file",))
    assert "not UTF-8" in lines[0]
    code, lines = run_cli(["claims", "compare", str(config), str(config)], capsys)
    assert code == EXIT_USAGE and len(lines) == 1 and "not UTF-8" in lines[0]
    code, lines = run_cli(["sweep", str(config)], capsys)
    assert code == EXIT_USAGE and len(lines) == 1 and "not UTF-8" in lines[0]
    assert written(no_run, "c.toml") == []
