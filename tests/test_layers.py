"""The package's layers import only downward: the rule of ``[tool.importlinter]`` holds on
the tree, and an import that points up is caught (so the check cannot pass vacuously)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (test extra)")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH puts the tree under test ahead of the installed (editable) sgdwalk.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _copy_of_the_tree(destination: Path) -> Path:
    for name in ("sgdwalk", "landscapes"):
        shutil.copytree(REPOSITORY / name, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPOSITORY / "pyproject.toml", destination / "pyproject.toml")
    return destination


def test_the_layers_of_the_tree_are_kept() -> None:
    result = _lint_imports(REPOSITORY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "upward_import"),
    [
        ("sgdwalk/base/tables.py", "import sgdwalk.instrument.record"),
        ("sgdwalk/instrument/segment.py", "import sgdwalk.cli.commands.walk"),
        ("sgdwalk/training/lr_schedules.py", "from sgdwalk.runs import runlog"),
        ("sgdwalk/runs/summary.py", "from sgdwalk.claims import statistics"),
        ("landscapes/valley.py", "import sgdwalk.runs.runner"),
        ("sgdwalk/instrument/tracker.py", "import sgdwalk.integrations.metrics"),
        ("sgdwalk/integrations/metrics.py", "import sgdwalk.runs.runner"),
        # training and integrations are independent siblings: neither imports the other.
        ("sgdwalk/integrations/csv_sink.py", "import sgdwalk.training.config"),
        ("sgdwalk/training/optim.py", "import sgdwalk.integrations.metrics"),
        # The landscapes stay in the repository: the installed package cannot import them.
        ("sgdwalk/instrument/segment.py", "import landscapes.valley"),
    ],
)
def test_an_upward_import_breaks_the_rule(tmp_path: Path, module: str, upward_import: str) -> None:
    root = _copy_of_the_tree(tmp_path)
    with (root / module).open("a", encoding="utf-8") as source:
        source.write(f"\n{upward_import}  # deliberately upward\n")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout


def test_the_shared_layer_imports_no_numerical_library() -> None:
    """``sgdwalk.base`` serves the pytest plugin and ``sgdwalk --help``: neither may pay for torch."""
    code = (
        "import sys, sgdwalk.base.atomic, sgdwalk.base.errors, sgdwalk.base.json_data, sgdwalk.base.tables; "
        "print(sorted(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPOSITORY)
    assert completed.stdout.strip() == "[]"
