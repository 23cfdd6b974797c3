"""The public surface: the imports mypy reads (the ``TYPE_CHECKING`` block) are the one list;
``sgdwalk._EXPORTS`` (what is imported at run time) is read from them, ``sgdwalk.__all__`` is
those names plus ``__version__``, and each public name imports.

Changing the public API means changing its ``TYPE_CHECKING`` import, nothing else.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import types

import pytest

import sgdwalk


def _type_checking_imports() -> dict[str, str]:
    """Name -> module of the ``from ... import ...`` lines under ``if _TYPE_CHECKING:``."""
    tree = ast.parse(inspect.getsource(sgdwalk))
    blocks = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "_TYPE_CHECKING"]
    assert len(blocks) == 1
    return {
        alias.asname or alias.name: str(statement.module)
        for statement in blocks[0].body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
    }


def test_all_is_the_exports_and_the_version() -> None:
    assert sgdwalk.__all__ == sorted([*sgdwalk._EXPORTS, "__version__"])
    assert len(sgdwalk.__all__) == len(set(sgdwalk.__all__)), "duplicates in __all__"


def test_mypy_sees_the_same_names_as_run_time() -> None:
    assert _type_checking_imports() == sgdwalk._EXPORTS


def test_each_public_import_is_an_explicit_re_export() -> None:
    # `from m import X as X`: without the alias mypy's --no-implicit-reexport hides X from users.
    tree = ast.parse(inspect.getsource(sgdwalk))
    (block,) = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "_TYPE_CHECKING"]
    imports = [statement for statement in block.body if not isinstance(statement, ast.Expr)]
    assert all(isinstance(statement, ast.ImportFrom) for statement in imports)
    aliases = [alias for statement in imports if isinstance(statement, ast.ImportFrom) for alias in statement.names]
    assert [alias.name for alias in aliases if alias.asname != alias.name] == []


def test_the_entry_points_of_the_guide_are_public() -> None:
    # The guide's walk from Python: configure, run, load back.
    assert {"WalkConfig", "run_walk", "load_run"} <= set(sgdwalk.__all__)
    # A loop of one's own: track it, write its run directory, load it back.
    assert {"WalkTracker", "RunDirectorySink", "load_run"} <= set(sgdwalk.__all__)


@pytest.mark.parametrize("name", sgdwalk.__all__)
def test_each_public_name_imports(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from sgdwalk import {name}", namespace)
    value = namespace[name]
    assert value is getattr(sgdwalk, name)
    if isinstance(value, (type, types.FunctionType)):
        # Re-exported from a one-idea module, not defined in the package's __init__.
        assert value.__module__ == sgdwalk._EXPORTS[name]


def test_no_public_name_outside_all() -> None:
    for name in sgdwalk.__all__:
        getattr(sgdwalk, name)  # load every lazy export first, so the namespace is complete
    leaked = {
        name
        for name, value in vars(sgdwalk).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - set(sgdwalk.__all__)
    assert not leaked, f"public names missing from __all__: {sorted(leaked)}"


def test_unknown_name_is_a_clear_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'sgdwalk' has no attribute 'WalkTraker'"):
        getattr(sgdwalk, "WalkTraker")  # noqa: B009 (the attribute access is the test)
    with pytest.raises(ImportError, match="WalkTraker"):
        exec("from sgdwalk import WalkTraker", {})


def test_star_import_gives_all_and_nothing_else() -> None:
    namespace: dict[str, object] = {}
    exec("from sgdwalk import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(sgdwalk.__all__)


def test_submodules_import_on_their_own() -> None:
    # Every module of the package imports alone, in any order (no hidden import cycles).
    import pkgutil

    names = [info.name for info in pkgutil.walk_packages(sgdwalk.__path__, prefix="sgdwalk.")]
    assert "sgdwalk.instrument.tracker" in names
    for name in names:
        if name.endswith("pytest_plugin"):
            continue  # imported by pytest itself at start-up
        assert importlib.import_module(name).__name__ == name
