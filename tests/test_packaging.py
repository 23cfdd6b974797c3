"""What the wheel holds: sgdwalk alone, with its type hints, at pyproject's one version number.

Read from pyproject.toml's settings and the installed metadata; nothing is built here.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import sgdwalk

REPOSITORY = Path(__file__).resolve().parents[1]


def _setuptools_settings() -> dict[str, Any]:
    with (REPOSITORY / "pyproject.toml").open("rb") as file:
        settings: dict[str, Any] = tomllib.load(file)["tool"]["setuptools"]
    return settings


def test_the_wheel_discovers_sgdwalk_and_not_the_landscapes() -> None:
    include = _setuptools_settings()["packages"]["find"]["include"]
    assert include == ["sgdwalk*"]
    # The repository's own top-level packages: only sgdwalk may match the pattern.
    top_level = sorted(path.parent.name for path in REPOSITORY.glob("*/__init__.py"))
    assert "landscapes" in top_level  # the folder stays, for the tests and suites
    assert [name for name in top_level if name.startswith("sgdwalk")] == ["sgdwalk"]


def test_the_type_hints_ship_with_the_package() -> None:
    assert (REPOSITORY / "sgdwalk" / "py.typed").is_file()
    assert "py.typed" in _setuptools_settings()["package-data"]["sgdwalk"]


def test_version_is_the_installed_distributions() -> None:
    assert sgdwalk.__version__ == importlib.metadata.version("sgdwalk")
    with (REPOSITORY / "pyproject.toml").open("rb") as file:
        assert sgdwalk.__version__ == tomllib.load(file)["project"]["version"]


def test_import_does_not_read_the_metadata_until_asked() -> None:
    # importlib.metadata costs more to import than sgdwalk itself: __version__ reads it lazily.
    code = (
        "import sys; before = 'importlib.metadata' in sys.modules; import sgdwalk; "
        "print(before or 'importlib.metadata' not in sys.modules, sgdwalk.__version__)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPOSITORY)
    assert completed.stdout.split() == ["True", importlib.metadata.version("sgdwalk")]
