"""Runs computed once per session and shared by every check that needs them: ``RunCache``, keyed
by ``WalkConfig.result_hash``, and the per-seed configs of a setting."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgdwalk.runs.run_data import WalkData, load_walk_data
from sgdwalk.runs.runner import run_walk
from sgdwalk.runs.walk_result import WalkResult
from sgdwalk.training.config import WalkConfig, data_key


@dataclass
class RunCache:
    """Runs computed once per session, shared by every claim that needs them.

    The data of a setting is loaded once too: reading and normalising a data set costs
    seconds, as much as a short run.
    """

    results: dict[str, WalkResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    data: dict[tuple[Any, ...], WalkData] = field(default_factory=dict)

    def run(self, config: WalkConfig) -> WalkResult:
        # Configs that differ only where the records do not (out_dir, progress, …) share a run.
        key = config.result_hash
        if key not in self.results:
            self.keep(config, self.compute)
        return self.results[key]

    def keep(self, config: WalkConfig, compute: Callable[[WalkConfig], WalkResult]) -> None:
        """Make the run of ``config`` with ``compute`` and keep it, with the seconds it took."""
        started = time.perf_counter()
        self.results[config.result_hash] = compute(config)
        self.seconds[config.result_hash] = time.perf_counter() - started

    def prepare(self, configs: Sequence[WalkConfig]) -> None:
        """Told every run a check is about to ask for, before it asks for them one by one.

        Here nothing happens: each run is made when it is asked for. A cache shared by
        several processes (``SweepRunCache`` on a common folder, the tiers under
        pytest-xdist) makes first the runs no other process is making, so that two workers
        that need the same runs share them out instead of one waiting for the other.
        """

    def compute(self, config: WalkConfig) -> WalkResult:
        """Produce a run not in the cache yet (subclasses may read it from disk instead)."""
        if data_key(config) not in self.data:
            self.data[data_key(config)] = load_walk_data(config)
        return run_walk(config, data=self.data[data_key(config)], progress=False)


def setting_configs(base: WalkConfig, overrides: Mapping[str, Any], seeds: Sequence[int]) -> list[WalkConfig]:
    """The setting's config for each seed; runs keep no files (out_dir=None)."""
    return [
        dataclasses.replace(base, **{**overrides, "seed": seed, "out_dir": None, "progress": False}) for seed in seeds
    ]
