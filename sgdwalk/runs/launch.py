"""How this process was launched, read from its environment without importing torch (so the
command line can refuse a setting before it loads torch)."""

from __future__ import annotations

import os


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that ``torchrun`` started (its environment says so)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


__all__ = ["launched_by_torchrun"]
