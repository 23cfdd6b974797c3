"""Files a person writes by hand to describe runs (a config, a sweep grid): one table of
names to values, in TOML (``.toml``) or JSON (any other suffix)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from sgdwalk.base.errors import SgdwalkError


def read_mapping_file(path: str | os.PathLike[str], what: str, error: type[SgdwalkError]) -> dict[str, Any]:
    """The table in ``path``; ``error`` (its message naming ``what``, e.g. "grid file") when
    the file cannot be read, is not UTF-8 text, is not valid TOML/JSON, or holds something
    else than a table."""
    path = Path(path)
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as problem:
        raise error(f"cannot read {what} {path}: {problem.strerror}") from None
    except UnicodeDecodeError as problem:
        raise error(f"{what} {path} is not UTF-8 text (byte {problem.start}: {problem.reason})") from None
    try:
        values = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{what} {path} is not valid {kind}: {problem}") from None
    if not isinstance(values, dict):
        raise error(f"{what} {path} must hold a table (names to values), got {type(values).__name__}")
    return values


__all__ = ["read_mapping_file"]
