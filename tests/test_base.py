"""The shared bottom layer: the root exception, atomic writes, strict JSON, text tables."""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch

import sgdwalk
from sgdwalk.base.atomic import atomic_write, atomic_write_text, temporary_path
from sgdwalk.base.errors import SgdwalkError
from sgdwalk.base.json_data import dumps, float_from_json, float_to_json, loads, to_json_data
from sgdwalk.base.tables import text_table


# ---------------------------------------------------------------------------- errors
def _package_error_classes() -> list[type[BaseException]]:
    """Every exception class defined in a module of the sgdwalk package."""
    found = []
    for module_info in pkgutil.walk_packages(sgdwalk.__path__, "sgdwalk."):
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            # A private exception (leading underscore) is control flow that never reaches a caller.
            if (
                issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not value.__name__.startswith("_")
            ):
                found.append(value)
    return found


@pytest.mark.slow  # imports every module, the optional integrations' libraries too (seconds)
def test_every_error_of_the_package_derives_from_the_root() -> None:
    errors = _package_error_classes()
    assert len(errors) >= 8  # config, two data, run directory, sweep (2), report, the root itself
    assert [error.__qualname__ for error in errors if not issubclass(error, SgdwalkError)] == []


@pytest.mark.parametrize(
    ("module", "name", "builtin"),
    [
        ("sgdwalk.training.config", "ConfigError", ValueError),
        ("sgdwalk.training.data", "DatasetFormatError", ValueError),
        ("sgdwalk.runs.sweep", "SweepError", ValueError),
        ("sgdwalk.runs.sweep", "CellBusyError", RuntimeError),
        ("sgdwalk.claims.report", "ReportError", ValueError),
    ],
)
def test_errors_keep_the_builtin_base_callers_catch(module: str, name: str, builtin: type[Exception]) -> None:
    error_class = getattr(importlib.import_module(module), name)
    with pytest.raises(builtin):
        raise error_class("refused")


# ---------------------------------------------------------------------------- atomic
def test_atomic_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    atomic_write_text(path, "old\n")
    assert atomic_write_text(path, "new\n") == path
    assert path.read_text(encoding="utf-8") == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_write_text(path, "complete")

    def crash_half_way(temporary: Path) -> None:
        temporary.write_text("half", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash_half_way)
    assert path.read_text(encoding="utf-8") == "complete"
    assert not temporary_path(path).exists()


def test_atomic_write_takes_path_writers(tmp_path: Path) -> None:
    path = atomic_write(tmp_path / "state.pt", lambda temporary: torch.save({"x": torch.arange(3)}, temporary))
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))


# ------------------------------------------------------------------------------ JSON
@pytest.mark.parametrize(
    ("value", "written"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf"), (0.1, 0.1), (-0.0, -0.0)]
)
def test_floats_round_trip(value: float, written: float | str) -> None:
    assert float_to_json(value) == written
    back = float_from_json(float_to_json(value))
    assert (math.isnan(back) and math.isnan(value)) or (
        back == value and math.copysign(1, back) == math.copysign(1, value)
    )


@pytest.mark.parametrize("raw", ["NaN", "1.0", True, None, [1.0]])
def test_only_numbers_and_the_three_words_are_floats(raw: object) -> None:
    with pytest.raises(ValueError):
        float_from_json(raw)


def test_numerical_values_become_plain_json() -> None:
    value = {
        "f32": np.float32(0.5), "i64": np.int64(3), "flag": np.bool_(True), "array": np.array([1.0, np.nan]),
        "scalar": torch.tensor(2.0), "path": Path("runs") / "a", "pair": (1, -math.inf), "missing": None,
    }  # fmt: skip
    assert to_json_data(value) == {
        "f32": 0.5, "i64": 3, "flag": True, "array": [1.0, "nan"], "scalar": 2.0, "path": str(Path("runs") / "a"),
        "pair": [1, "-inf"], "missing": None,
    }  # fmt: skip
    with pytest.raises(TypeError, match=r"value\.thing = <object"):
        to_json_data({"thing": object()})


def test_dumps_writes_strict_json_that_loads_reads_back() -> None:
    value = {"loss": math.nan, "curve": [1.0, math.inf], "status": "diverged", "note": None}
    text = dumps(value)
    assert "\n" not in text and "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard constant {name}"))
    back = loads(text)
    assert math.isnan(back["loss"]) and back["curve"] == [1.0, math.inf]
    assert (back["status"], back["note"]) == ("diverged", None)
    assert dumps(value, indent=2).count("\n") == 8


# ---------------------------------------------------------------------------- tables
def test_text_table_left_aligned_without_trailing_spaces() -> None:
    lines = text_table(("id", "outcome"), [("C10", "passed"), ("C3", "xfailed: a reason")])
    assert lines == ["id   outcome", "C10  passed", "C3   xfailed: a reason"]


def test_text_table_right_aligned_with_a_rule() -> None:
    lines = text_table(("epoch", "height"), [("1", "0.0151"), ("25", "0.2")], align="right", rule=True)
    assert lines == ["epoch  height", "-----  ------", "    1  0.0151", "   25     0.2"]


def test_text_table_per_column_alignment_and_shape_checks() -> None:
    assert text_table(("a", "b"), [("xx", "1")], align=("left", "right")) == ["a   b", "xx  1"]
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        text_table(("a", "b"), [("x",)])
    with pytest.raises(ValueError, match="1 alignments for 2 columns"):
        text_table(("a", "b"), [], align=("left",))


# ---------------------------------------------------------------------- mapping files
class _Refused(SgdwalkError):
    pass


def test_mapping_files_in_toml_or_json(tmp_path: Path) -> None:
    from sgdwalk.base.mapping_files import read_mapping_file

    (tmp_path / "grid.toml").write_text('[base]\narch = "mlp"\n', encoding="utf-8")
    (tmp_path / "grid.json").write_text('{"base": {"arch": "mlp"}}', encoding="utf-8")
    for name in ("grid.toml", "grid.json"):
        assert read_mapping_file(tmp_path / name, "grid file", _Refused) == {"base": {"arch": "mlp"}}
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    (tmp_path / "broken.toml").write_text("arch = ", encoding="utf-8")
    for name, message in [
        ("list.json", "grid file .*list.json must hold a table"),
        ("broken.toml", "grid file .*broken.toml is not valid TOML"),
        ("absent.json", "cannot read grid file .*absent.json"),
    ]:
        with pytest.raises(_Refused, match=message):
            read_mapping_file(tmp_path / name, "grid file", _Refused)
