"""Runs computed once per session and shared by every check that needs them: ``RunCache``, keyed
by ``WalkConfig.result_hash``, and the per-seed configs of a setting."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
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
            started = time.perf_counter()
            self.results[key] = self.compute(config)
            self.seconds[key] = time.perf_counter() - started
        return self.results[key]

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
