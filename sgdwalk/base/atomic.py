"""Files written whole or not at all: write a temporary file beside the target, then rename.

``os.replace`` is atomic on POSIX when both names are in one folder, so a reader (or a run
resumed after a crash) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

# Beside the target (same folder, hence same file system: the rename stays atomic).
TEMPORARY_SUFFIX: Final = ".tmp"


def temporary_path(path: Path) -> Path:
    """Where ``path``'s next version is written before it replaces ``path``."""
    return path.with_name(path.name + TEMPORARY_SUFFIX)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary)`` then rename the temporary file onto ``path``; returns ``path``.

    For writers that take a path (``torch.save``); a failed ``write`` leaves ``path`` as it was.
    """
    target = Path(path)
    temporary = temporary_path(target)
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all; returns ``path``."""
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


__all__ = ["TEMPORARY_SUFFIX", "atomic_write", "atomic_write_text", "temporary_path"]
