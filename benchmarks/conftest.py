"""Benchmarks report ratios measured side by side in one run, not absolute times alone.

Each benchmark stores its median under (group, method); at the end of the session the ratio
of every method to its group's reference method is printed.
"""

from __future__ import annotations

from collections import defaultdict

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
