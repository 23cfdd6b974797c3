"""How this process was launched, read from its environment without importing torch (so the
command line can refuse a setting before it loads torch)."""

from __future__ import annotations

import os


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that ``torchrun`` started (its environment says so)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def launched_world_size() -> int:
    """How many processes this launch trains with: torchrun's ``WORLD_SIZE``, else 1."""
    return int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1


__all__ = ["launched_by_torchrun", "launched_world_size"]
