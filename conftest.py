"""Repository-wide test settings: hypothesis profiles.

`dev` (the default here) keeps property tests fast while editing; under CI (the CI
environment variable is set) hypothesis's built-in `ci` profile applies: derandomized,
no deadline, its default example count.
"""

from __future__ import annotations

import os

# Imported once for the whole session, before any pytester run: in-process pytester runs
# restore sys.modules afterwards, so a torch first imported inside one would be imported a
# second time by the next, and torch's C extension crashes (segfault) on a second import.
import torch  # noqa: F401
from hypothesis import HealthCheck, settings

# Derandomized so a local failure reproduces; few examples because each one trains a walk.
settings.register_profile(
    "dev",
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
if os.environ.get("CI"):
    settings.load_profile("ci")
else:
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
