"""The independent random streams of a run, as offsets from ``config.seed``.

Each stream is seeded on its own, so that changing what is measured never changes what is
trained (the list of streams: ``sgdwalk.runs.runner``'s docstring).
"""

from __future__ import annotations

from typing import Final

# Offsets of the independent random streams from config.seed (see the module docstring).
MEASUREMENT_STREAM: Final = 1
NOISE_STREAM: Final = 2
NOISE_ESTIMATE_STREAM: Final = 3
SAMPLE_ORDER_STREAM: Final = 4
# The training subset is the same whatever the run's seed, so runs that differ in seed
# differ in initialisation and batch order only, not in the data they see.
DATA_SUBSET_SEED: Final = 0
