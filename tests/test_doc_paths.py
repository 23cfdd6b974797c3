"""Every repository path that a comment, a docstring or a document names exists.

Paths are tokens such as ``suites/quick/conftest.py`` or ``docs/`` that start at one of the
repository's top-level folders; a token cut short by a placeholder (``runs/<arch>-...``,
``suites/baselines/*.json``) is checked up to its folder. Markdown links are checked
relative to their document. Scanned: the tracked files (``git ls-files``); in Python, the
comments and docstrings (string literals in code are test data, not references); in TOML, INI
and shell files, the comment lines; Markdown whole.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path
from typing import Final

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]

TOP_LEVEL_FOLDERS: Final = (
    ".ci",
    "benchmarks",
    "docs",
    "examples",
    "landscapes",
    "reports",
    "results",
    "runs",
    "scripts",
    "sgdwalk",
    "suites",
    "tests",
)
# Not preceded by a path character, so /usr/share/... and .venv/bin/... are not read as ours.
PATH_TOKEN: Final = re.compile(r"(?<![\w./$~-])(?:" + "|".join(map(re.escape, TOP_LEVEL_FOLDERS)) + r")/[\w./-]*")
MARKDOWN_LINK: Final = re.compile(r"\]\(([^)\s]+)\)")

# Paths made at run time, never tracked; each with who makes it.
MADE_AT_RUN_TIME: Final[dict[str, str]] = {
    "reports/": "the claims reports the tiers write (--sgdwalk-report); .gitignore'd",
    "runs/": "run directories `sgdwalk walk` writes (--out)",
    "results/gpu/float32-error.json": "benchmarks/float32_error.py on a GPU machine",
    "results/gpu/float32-error.txt": "results/gpu/README.md's command, on a GPU machine",
    "results/gpu/paper-report.json": "the gpu tier's paper profile, on a GPU machine",
    "results/gpu/smoke-log.txt": "scripts/gpu-smoke.sh",
    "results/gpu/smoke-report.json": "scripts/gpu-smoke.sh",
    "results/gpu/smoke-table.md": "scripts/gpu-smoke.sh",
    "results/gpu/speed.json": "benchmarks/gpu_speed.py on a GPU machine",
    "results/gpu/speed.txt": "results/gpu/README.md's command, on a GPU machine",
    "results/gpu/tiny-cuda-report.json": "the gpu tier's tiny profile on CUDA",
}


def _tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=REPOSITORY, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return [REPOSITORY / name for name in listed if (REPOSITORY / name).is_file()]


def _python_prose(source: str) -> str:
    """The comments and docstrings of a Python source."""
    comments = [
        token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    nodes = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    docstrings = [docstring for node in nodes if (docstring := ast.get_docstring(node, clean=False))]
    return "\n".join(comments + docstrings)


def _comment_lines(source: str) -> str:
    return "\n".join(line for line in source.splitlines() if line.lstrip().startswith(("#", ";")))


def _prose(path: Path) -> str | None:
    """What of ``path`` is prose, by its kind; None for files not scanned (data, images)."""
    if path.suffix not in {".md", ".py", ".toml", ".ini", ".sh", ""}:
        return None
    source = path.read_bytes()
    if path.suffix == "" and not source.startswith(b"#!"):
        return None  # only scripts among the files without a suffix
    text = source.decode("utf-8")
    if path.suffix == ".md":
        return text
    if path.suffix == ".py":
        return _python_prose(text)
    return _comment_lines(text)


def _named_paths(text: str) -> set[str]:
    # A sentence's full stop is not part of the path.
    return {match.group(0).rstrip(".") for match in PATH_TOKEN.finditer(text)}


def _made_at_run_time(name: str) -> bool:
    return any(name == allowed or (allowed.endswith("/") and name.startswith(allowed)) for allowed in MADE_AT_RUN_TIME)


def _missing_named_paths(path: Path, text: str) -> list[str]:
    return sorted(
        name for name in _named_paths(text) if not _made_at_run_time(name) and not (REPOSITORY / name).exists()
    )


def _missing_link_targets(path: Path, text: str) -> list[str]:
    targets = [target.split("#", 1)[0] for target in MARKDOWN_LINK.findall(text)]
    return sorted(
        target
        for target in targets
        if target and "://" not in target and not target.startswith("mailto:") and not (path.parent / target).exists()
    )


def test_every_named_repository_path_exists() -> None:
    missing: list[str] = []
    for path in _tracked_files():
        text = _prose(path)
        if text is None:
            continue
        where = path.relative_to(REPOSITORY)
        missing += [f"{where}: {name}" for name in _missing_named_paths(path, text)]
        if path.suffix == ".md":
            missing += [f"{where}: link {target}" for target in _missing_link_targets(path, text)]
    assert not missing, "paths named but not in the repository:\n  " + "\n  ".join(missing)


def test_each_run_time_exception_is_needed() -> None:
    # Named somewhere and not tracked: otherwise the exception is stale; drop it from the list.
    named: set[str] = set()
    for path in _tracked_files():
        text = _prose(path)
        named |= _named_paths(text) if text is not None else set()
    unused = [allowed for allowed in MADE_AT_RUN_TIME if not any(name.startswith(allowed) for name in named)]
    tracked = {str(path.relative_to(REPOSITORY)) for path in _tracked_files()}
    assert not unused and not tracked & set(MADE_AT_RUN_TIME)


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("x = 1  # see suites/quick/conftest.py.", {"suites/quick/conftest.py"}),
        ('"""Docs in docs/guide.md and sgdwalk/base/."""', {"docs/guide.md", "sgdwalk/base/"}),
        ('x = "tests/test_o.py"  # test data, not a reference', set()),
        ("# /usr/share/docs/x.md and .venv/bin/sgdwalk are not ours", set()),
        ("# runs/<arch>-<data> and suites/baselines/*.json", {"runs/", "suites/baselines/"}),
    ],
)
def test_what_counts_as_a_named_path(source: str, named: set[str]) -> None:
    assert _named_paths(_python_prose(source)) == named


def test_a_path_that_does_not_exist_is_found() -> None:
    assert _missing_named_paths(REPOSITORY / "x.py", "# tests/test_config.py and tests/test_public_api.py") == [
        "tests/test_config.py"
    ]
    assert _missing_link_targets(REPOSITORY / "docs" / "x.md", "[a](guide.md#tiers) [b](nowhere.md)") == ["nowhere.md"]
