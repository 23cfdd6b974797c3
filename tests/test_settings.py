"""Settings declared once (``sgdwalk.base.settings``): the kinds read from annotations, the
checks and the flags made from a declaration, and the settings dataclasses built on them."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from sgdwalk.base.settings import declared_fields, first_problem, sections, setting, value_problem
from sgdwalk.claims.engine import RunCache
from sgdwalk.cli import main
from sgdwalk.cli.exits import EXIT_USAGE
from sgdwalk.cli.setting_flags import add_setting_flags
from sgdwalk.integrations.sink_spec import SINK_EXTRAS, SINK_KINDS, log_to_help
from sgdwalk.runs.slurm_options import SlurmOptions, SlurmOptionsError
from sgdwalk.training.config import WalkConfig, data_key

REPOSITORY = Path(__file__).resolve().parents[1]
PYPROJECT = REPOSITORY / "pyproject.toml"

Colour = Literal["red", "green"]


@dataclass(frozen=True)
class Example:
    switch: bool = setting(False, "a switch")
    count: int = setting(3, "a count", metavar="N", at_least=2, why="two make a pair")
    limit: int | None = setting(None, "a limit", metavar="N", positive=True)
    rate: float = setting(0.5, "a rate", metavar="R", at_least=0, at_most=1)
    colour: Colour = setting("red", "a colour")
    name: str = setting("a", "a name", choices=("a", "b"))
    epochs: tuple[int, ...] = setting((), "epochs", metavar="E", at_least=1)
    windows: tuple[tuple[int, int], ...] = setting((), "windows", metavar="A:B")


def problem(name: str, value: Any) -> str | None:
    (field,) = (field for field in declared_fields(Example) if field.name == name)
    return value_problem(field, value)


def test_the_kind_of_each_field_is_read_from_its_annotation() -> None:
    found = {field.name: (field.kind, field.optional, field.choices) for field in declared_fields(Example)}
    assert found == {
        "switch": ("bool", False, None),
        "count": ("int", False, None),
        "limit": ("int", True, None),
        "rate": ("float", False, None),
        "colour": ("text", False, ("red", "green")),
        "name": ("text", False, ("a", "b")),
        "epochs": ("int-list", False, None),
        "windows": ("windows", False, None),
    }


def test_a_field_not_declared_as_a_setting_is_refused() -> None:
    @dataclass(frozen=True)
    class Undeclared:
        plain: int = 1

    with pytest.raises(TypeError, match=r"Undeclared\.plain is not declared with setting"):
        declared_fields(Undeclared)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("switch", 1, "switch must be true or false, got 1"),
        ("count", True, "count must be an integer, got True"),
        ("count", 2.0, "count must be an integer, got 2.0"),
        ("count", 1, "count must be at least 2 (two make a pair), got 1"),
        ("count", None, "count must be an integer, got None"),
        ("limit", 0, "limit must be positive, got 0"),
        ("rate", float("nan"), "rate must be a finite number, got nan"),
        ("rate", 1.5, "rate must be from 0 to 1, got 1.5"),
        ("rate", "x", "rate must be a number, got 'x'"),
        ("colour", "blue", "colour must be one of red, green; got 'blue'"),
        ("colour", "", "colour must not be empty"),
        ("name", 5, "name must be a string, got 5"),
        ("epochs", (1, 0), "epochs must be at least 1, got 0"),
    ],
)
def test_a_value_the_declaration_refuses_is_named_with_its_reason(name: str, value: Any, message: str) -> None:
    assert problem(name, value) == message


@pytest.mark.parametrize(
    ("name", "value"),
    [("switch", True), ("count", 2), ("limit", None), ("limit", 1), ("rate", 0), ("rate", 1.0), ("epochs", (1, 2))],
)
def test_a_value_the_declaration_allows_passes(name: str, value: Any) -> None:
    assert problem(name, value) is None


def test_the_first_refused_field_in_declaration_order_is_reported() -> None:
    assert first_problem(Example, Example()) is None
    assert first_problem(Example, dataclasses.replace(Example(), count=0, limit=0)) == (
        "count must be at least 2 (two make a pair), got 0"
    )


def _example_parser(defaults: object | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(argument_default=None if defaults is not None else argparse.SUPPRESS)
    add_setting_flags(parser, declared_fields(Example), defaults=defaults)
    return parser


def test_flags_are_made_from_the_declarations() -> None:
    parser = _example_parser(None)
    given = parser.parse_args(
        ["--switch", "--count", "5", "--limit", "none", "--colour", "green", "--epochs", "1,3", "--windows", "0:2"]
    )
    assert vars(given) == {
        "switch": True,
        "count": 5,
        "limit": None,
        "colour": "green",
        "epochs": (1, 3),
        "windows": "0:2",  # parsed by the dataclass, which says what is wrong with a window
    }
    assert vars(parser.parse_args([])) == {}  # only the flags given reach a config
    assert vars(_example_parser(Example()).parse_args([]))["count"] == 3
    text = " ".join(parser.format_help().split())
    assert "--count N a count (default: 3)" in text
    assert "--switch, --no-switch a switch (default: off)" in text
    assert "--colour {red,green} a colour (default: red)" in text


def test_every_walk_and_slurm_setting_says_what_it_is() -> None:
    for cls in (WalkConfig, SlurmOptions):
        for field in declared_fields(cls):
            assert field.setting.help.strip(), field.name
            if field.kind != "bool" and field.choices is None:
                assert field.setting.metavar, f"{cls.__name__}.{field.name} has no metavar"
    assert sections(WalkConfig) == ("model and data", "optimizer and learning rate", "what is measured", "run", "files")


def test_a_slurm_option_out_of_range_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SlurmOptionsError, match="time_min must be positive, got 0"):
        SlurmOptions(time_min=0)
    grid = tmp_path / "grid.toml"
    grid.write_text("[base]\nepochs = 1\ntrack_epochs = [1]\n[axes]\nseed = [1]\n", encoding="utf-8")
    code = main(["sweep", str(grid), "--out", str(tmp_path / "sweep"), "--cpus-per-task", "0"])
    lines = capsys.readouterr().err.splitlines()
    assert code == EXIT_USAGE and len(lines) == 1 and "cpus_per_task must be positive" in lines[0], lines
    assert not (tmp_path / "sweep").exists()


def test_the_log_to_help_names_every_sink_and_the_extras_that_exist() -> None:
    text = log_to_help()
    for kind, where in SINK_KINDS.items():
        assert f"{kind}:{where}" in text
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    for extra in SINK_EXTRAS.values():
        assert extra in extras and f"sgdwalk[{extra}]" in text


def test_the_run_cache_shares_runs_that_differ_only_where_the_records_do_not() -> None:
    computed: list[WalkConfig] = []

    class CountingCache(RunCache):
        def compute(self, config: WalkConfig) -> Any:
            computed.append(config)
            return config

    cache = CountingCache()
    base = WalkConfig(out_dir=None, progress=False)
    cache.run(base)
    cache.run(base.replace(out_dir="elsewhere", progress=True, checkpoint_every_epochs=None))
    cache.run(base.replace(seed=7))
    assert computed == [base, base.replace(seed=7)]


def test_runs_share_data_unless_a_data_field_differs() -> None:
    base = WalkConfig()
    assert data_key(base.replace(lr=0.5, seed=3, arch="vgg11")) == data_key(base)
    for changes in ({"train_subset": 5_000}, {"pad_to": 32}, {"data": "mnist"}, {"validation_subset": 10}):
        assert data_key(base.replace(**changes)) != data_key(base), changes


def test_the_flags_are_made_without_importing_torch() -> None:
    """``sgdwalk walk --help`` and ``sgdwalk sweep --help`` read the declarations, not the sinks or the runner."""
    code = (
        "import sys; from sgdwalk.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPOSITORY)
    assert completed.stdout.strip() == "[]"
