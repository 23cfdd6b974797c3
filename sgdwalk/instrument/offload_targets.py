"""Where a tracker may keep its vectors (``offload``), declared without torch: the run's config
and its command-line flags read it (``sgdwalk walk --help`` imports no torch)."""

from __future__ import annotations

from typing import Literal

OffloadTarget = Literal["host", "disk"]
OFFLOAD_TARGETS: tuple[OffloadTarget, ...] = ("host", "disk")


def check_offload(offload: str | None) -> OffloadTarget | None:
    if offload is None:
        return None
    for target in OFFLOAD_TARGETS:
        if offload == target:
            return target
    raise ValueError(f"offload must be None, {' or '.join(repr(t) for t in OFFLOAD_TARGETS)}; got {offload!r}")
