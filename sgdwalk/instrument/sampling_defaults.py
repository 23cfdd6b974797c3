"""The defaults of precision-targeted measurement (``sampling.PrecisionTarget``), in a module
that imports nothing, so that the run configuration and ``sgdwalk walk --help`` can show
them without importing torch."""

from __future__ import annotations

from typing import Final

#: Default precision of the heights in precision-targeted measurement: a standard error of
#: at most half the height, or 0.01 in loss units, whichever is looser. Half the height is
#: the precision at which a height is told apart from zero (two standard errors); window
#: means over tens of steps then average the per-step errors down. 0.01 keeps heights near
#: zero late in training from asking for the whole set, while early heights (~0.05 on the
#: default walk, 0.06 in the paper's Table 2) stay resolved. Tighter targets read more: on
#: the default walk a standard error of 0.002 needs more samples than the 1,000 it holds.
DEFAULT_HEIGHT_RELATIVE_SE: Final[float] = 0.5
DEFAULT_HEIGHT_SE: Final[float] = 0.01

#: The first look's size. The stopping rule reads standard errors estimated on the samples
#: read, and per-sample loss differences are skewed: at 128 samples their variance came out
#: low often enough that stopping there left heights of 0 with error 0 and 95 % intervals
#: covering 80 % at an early step (45 disjoint 1,000-image Fashion-MNIST sets). 512 is the
#: smallest power of two at which every height's error was non-zero where the population's
#: height was; with growth 2 a 1,000-sample set is read in at most 2 looks, while at the
#: paper's 45,000-image set a step still stops after a few percent of it.
DEFAULT_FIRST_LOOK: Final[int] = 512

__all__ = ["DEFAULT_FIRST_LOOK", "DEFAULT_HEIGHT_RELATIVE_SE", "DEFAULT_HEIGHT_SE"]
