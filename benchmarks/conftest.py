"""Benchmarks report ratios measured side by side in one run, not absolute times alone.

Each benchmark stores its median under (group, method) with ``remember``; once its group's
reference method has run, every benchmark of the group carries its ratio to the reference in
its ``extra_info`` (so ``--benchmark-autosave``, ``--benchmark-json`` and
``--benchmark-compare`` keep and show them), and at the end of the session the ratios are
printed. The goals are asserted by the benchmarks themselves (``record_goal``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

# One intra-op thread, as `sgdwalk walk` runs by default (config.DEFAULT_CPU_THREADS): the
# ratios then compare the methods, not how well each hides a second thread's waits.
torch.set_num_threads(1)

# (group, method) -> median seconds, filled by the benchmarks of this session.
MEDIANS: dict[str, dict[str, float]] = defaultdict(dict)
# (group, what) -> a number worth printing beside the ratios (e.g. peak memory in MiB).
EXTRAS: dict[str, dict[str, str]] = defaultdict(dict)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MEDIANS:
        return
    terminalreporter.section("sgdwalk benchmark ratios (median / reference median)")
    for group, medians in sorted(MEDIANS.items()):
        reference = medians.get("reference")
        for method, median in sorted(medians.items()):
            ratio = f"{median / reference:.2f}x" if reference else "-"
            terminalreporter.write_line(f"{group:<28} {method:<22} {median * 1e3:9.1f} ms  {ratio}")
        for what, value in sorted(EXTRAS.get(group, {}).items()):
            terminalreporter.write_line(f"{group:<28} {what:<22} {value}")


def median_seconds(benchmark: BenchmarkFixture) -> float:
    """The median of a benchmark that has run (pytest-benchmark fills ``stats`` after a run)."""
    assert benchmark.stats is not None, "the benchmark has not run"
    return float(benchmark.stats.stats.median)


# group -> method -> that benchmark's extra_info (pytest-benchmark saves the dict as it is at
# the session's end, so a ratio added after the benchmark ran is saved with it).
EXTRA_INFOS: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)


def remember(benchmark: BenchmarkFixture, group: str, method: str, median: float | None = None) -> None:
    """Store the median (default: the benchmark's own) and give every benchmark of ``group``
    that has run its ratio to the group's reference, once the reference has run."""
    MEDIANS[group][method] = median_seconds(benchmark) if median is None else median
    EXTRA_INFOS[group][method] = benchmark.extra_info
    reference = MEDIANS[group].get("reference")
    if not reference:
        return
    for name, info in EXTRA_INFOS[group].items():
        info.update(
            median_seconds=MEDIANS[group][name],
            reference_median_seconds=reference,
            ratio_to_reference=MEDIANS[group][name] / reference,
        )


def record_goal(group: str, method: str, goal: str, met: bool) -> None:
    """Write the goal and whether it was met into the benchmark's extra_info, before asserting it."""
    EXTRA_INFOS[group][method].update(goal=goal, goal_met=met)


def in_fresh_process(module: str, name: str, variant: str) -> dict[str, float]:
    """``module.child(name, variant)`` run in a new interpreter (peak memory is the process's
    own, untouched by what ran before); its last line of output, JSON, read back."""
    root = str(Path(__file__).resolve().parent.parent)
    script = f"import sys; sys.path.insert(0, {root!r}); from {module} import child; child({name!r}, {variant!r})"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return figures
