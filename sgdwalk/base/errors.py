"""The root of every error sgdwalk raises on purpose.

Each error class of the package derives from ``SgdwalkError`` *and* keeps the built-in base
it had before (``class ConfigError(SgdwalkError, ValueError)``), so a caller may catch
everything sgdwalk refuses with one ``except SgdwalkError`` while code that catches
``ValueError`` keeps working.
"""

from __future__ import annotations


class SgdwalkError(Exception):
    """Something sgdwalk refuses or cannot do, with a message that says why."""


__all__ = ["SgdwalkError"]
