"""Optional libraries, imported on first use, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from sgdwalk.base.errors import SgdwalkError


class MissingExtraError(SgdwalkError, ImportError):
    """An integration needs a library that is not installed; the message names the extra."""


def require(module: str, *, extra: str, needed_by: str) -> ModuleType:
    """``import module``, or a ``MissingExtraError`` saying ``pip install 'sgdwalk[extra]'``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        # Only the library itself missing is ours to explain; a broken install raises as it is.
        if error.name is None or not (module == error.name or module.startswith(error.name + ".")):
            raise
        raise MissingExtraError(
            f"{needed_by} needs the {error.name!r} package: pip install 'sgdwalk[{extra}]'"
        ) from error
