"""The modules conftest.py leaves uncollected without --runslow hold slow tests only, so that
the slow step (``pytest tests --runslow -m slow``) still runs every one of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _round_trip_modules() -> frozenset[str]:
    """conftest.py's ``ROUND_TRIP_MODULES`` (the repository root's conftest, which tests/conftest.py shadows as a module name)."""
    for node in ast.parse((REPO_ROOT / "conftest.py").read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "ROUND_TRIP_MODULES"
        ):
            assert isinstance(node.value, ast.Call)
            return frozenset(ast.literal_eval(node.value.args[0]))
    raise AssertionError("conftest.py defines no ROUND_TRIP_MODULES")


ROUND_TRIP_MODULES = _round_trip_modules()


def _module_marks(source: str) -> list[str]:
    """The marks of a module's ``pytestmark`` assignment, as source text."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            value = node.value
            items = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
            return [ast.unparse(item) for item in items]
    return []


@pytest.mark.parametrize("module", sorted(ROUND_TRIP_MODULES))
def test_an_uncollected_module_is_marked_slow_as_a_whole(module: str) -> None:
    path = REPO_ROOT / module
    assert path.is_file(), f"{module} is named in conftest.py's ROUND_TRIP_MODULES but does not exist"
    assert "pytest.mark.slow" in _module_marks(path.read_text(encoding="utf-8")), module


def test_the_mark_reader_sees_a_module_without_the_mark() -> None:
    assert _module_marks("import pytest\npytestmark = pytest.mark.filterwarnings('x')\n") == [
        "pytest.mark.filterwarnings('x')"
    ]
    assert _module_marks("import pytest\n") == []
