"""``python -m suites.pilot``: a profile's sizes are piloted on seeds the tier never runs."""

from __future__ import annotations

import pytest

from suites.pilot import main
from suites.profiles import PROFILES


@pytest.mark.parametrize("profile", ["real", "nets"])
def test_a_pilot_on_a_tier_seed_is_refused_before_any_run(profile: str) -> None:
    tier_seed = PROFILES[profile].seeds[0]
    with pytest.raises(SystemExit, match=f"pilot seeds \\[{tier_seed}\\] are tier seeds of {profile}"):
        main(["--profile", profile, "--seeds", str(tier_seed), "7"])


def test_more_seeds_of_a_profile_count_as_tier_seeds() -> None:
    real = PROFILES["real"]
    extra = sorted({seed for seeds in real.more_seeds.values() for seed in seeds} - set(real.seeds))
    assert extra, "the real profile runs some checks on more seeds"
    with pytest.raises(SystemExit, match="are tier seeds"):
        main(["--profile", "real", "--seeds", str(extra[0])])
