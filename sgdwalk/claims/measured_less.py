"""Runs that measure only what their checks read.

A tier runs a setting on more seeds for some checks than for others (a profile's
``more_seeds``), and the checks that need the extra seeds often read little of a run: the
final validation accuracy, or the sharpness at two steps. Measuring a step costs tens of
training steps, so a run made only for such checks measures only what they read
(``measured_for``). It follows the same trajectory as the fully measured run: the instrument
never changes what it measures (tested in ``tests/test_tracker.py`` and, for these runs, in
``tests/test_measured_less.py``), so every value those checks read is the same bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sgdwalk.claims.check import READS, Reads
from sgdwalk.claims.run_cache import setting_configs
from sgdwalk.training.config import WalkConfig

# The optional per-step quantities, each on a schedule of measured steps: none is read by a
# check that reads only the history, and none by one that reads only the sharpness.
_SCHEDULED_QUANTITIES = ("hessian_trace_every", "gradient_noise_scale_every", "top_eigenvalues_every")


def most_read(reads: Sequence[Reads]) -> Reads:
    """What a run shared by checks reading ``reads`` must record: the most any of them reads."""
    return min(reads, key=READS.index)


def measured_for(config: WalkConfig, reads: Reads) -> WalkConfig:
    """``config`` measuring only what a check reading ``reads`` needs.

    - "records": the config itself.
    - "history": no step measured (the epoch-end evaluations and distances stay).
    - "sharpness": only the measured steps at which the sharpness is estimated (multiples of
      ``sharpness_every`` in the ``track_steps`` windows), each a one-step window. Where the
      schedule is not given by ``track_steps`` alone (tracked epochs, every k-th step, the
      sharpness per tracked epoch), the steps depend on the data's size: the config itself.
    """
    if reads not in READS:
        raise ValueError(f"reads must be one of {READS}, got {reads!r}")
    if reads == "records":
        return config
    # The minibatch size of an unmeasured noise scale would still enter the run's hash.
    quieter: dict[str, Any] = dict.fromkeys((*_SCHEDULED_QUANTITIES, "gradient_noise_batch"))
    if reads == "history":
        return dataclasses.replace(
            config, **quieter, track_epochs=(), track_every=None, track_steps=(), sharpness_every=None
        )
    every = config.sharpness_every
    if every is None:
        raise ValueError("a check that reads the sharpness needs a setting that measures it (sharpness_every)")
    if config.track_epochs or config.track_every is not None or config.sharpness_per_tracked_epoch:
        return config
    steps = sorted({step for start, stop in config.track_steps for step in range(start, stop) if step % every == 0})
    return dataclasses.replace(config, **quieter, track_steps=tuple((step, step + 1) for step in steps))


@dataclass(frozen=True)
class MeasuredLess:
    """A setting some of whose seeds' runs measure less than its overrides say.

    Attributes:
        overrides: the setting (what a run on any other seed measures: everything).
        reads: per seed, the most any check run on that seed reads of this setting; a
            seed not named reads its "records".
    """

    overrides: Mapping[str, Any]
    reads: Mapping[int, Reads]

    def configs(self, base: WalkConfig, seeds: Sequence[int]) -> list[WalkConfig]:
        """The setting's config for each seed, each measuring what that seed's checks read."""
        return [
            measured_for(config, self.reads.get(seed, "records"))
            for seed, config in zip(seeds, setting_configs(base, self.overrides, seeds), strict=True)
        ]

    def ledger(self, seeds: Sequence[int]) -> dict[str, Any]:
        """What the ledger records of the setting on ``seeds``: its overrides, and which of the
        seeds measured only what (in seed order)."""
        lighter: dict[str, list[int]] = {}
        for seed in seeds:
            reads = self.reads.get(seed, "records")
            if reads != "records":
                lighter.setdefault(reads, []).append(seed)
        return {**dict(self.overrides), **({"measured_only": lighter} if lighter else {})}
