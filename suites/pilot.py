"""Pilot runs of a profile: each check's settings on seeds that are not the tier's, timed.

A profile's sizes are chosen from pilot runs before its first tier run (and written in the
profile with their reasons). This prints, per part, what every setting its checks need
costs on this machine, and each check's per-seed statistic beside its bound, so the sizes
can be chosen for time and for an effect the tier's seeds can resolve:

    python -m suites.pilot --profile nets --seeds 1 --part resnet56

Its seeds must be outside the profile's (and its ``more_seeds``): a pilot that chose the
sizes on the tier's own seeds would tune the verdict. Nothing is asserted and nothing is
written; the tier decides.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from sgdwalk.claims.run_cache import RunCache, setting_configs
from sgdwalk.claims.tuned import setting_points
from sgdwalk.runs.runner import WalkResult
from suites.gpu.claims import choose_data
from suites.profiles import PROFILES, Profile
from suites.tier_plan import base_config, part_settings


def _profile_seeds(profile: Profile) -> set[int]:
    return {*profile.seeds, *(seed for seeds in profile.more_seeds.values() for seed in seeds)}


def pilot(profile: Profile, part_names: Sequence[str], seeds: Sequence[int], device: str) -> None:
    clash = sorted(set(seeds) & _profile_seeds(profile))
    if clash:
        raise SystemExit(f"pilot seeds {clash} are tier seeds of {profile.name}: choose others")
    cache = RunCache()
    for name in part_names:
        part, size = profile.parts[name], profile.sizes[name]
        # The tier's own data choice: the paper's data when found, else its fallback where allowed.
        base = base_config(part, size, choose_data(part, "auto", profile, None), device)
        settings = part_settings(part, size)
        needed = sorted({setting for check in part.checks for setting in check.settings})
        runs: dict[str, list[WalkResult]] = {}
        part_started = time.perf_counter()
        for setting in needed:
            points = setting_points(settings[setting])
            started = time.perf_counter()
            results = [cache.run(config) for point in points for config in setting_configs(base, point, seeds)]
            seconds = time.perf_counter() - started
            runs[setting] = results
            measured = sum(len(result.records) for result in results)
            print(f"{name} {setting}: {seconds:.1f} s for {len(results)} run(s), {measured} measured steps", flush=True)
        print(f"{name}: {time.perf_counter() - part_started:.1f} s for {len(needed)} settings", flush=True)
        for check in part.checks:
            try:
                estimate = check.statistic(runs)
            except (ValueError, KeyError) as error:
                print(f"  {check.key}: not computed ({error})")
                continue
            print(
                f"  {check.key}: per seed {[round(v, 5) for v in estimate.per_seed]} "
                f"{check.relation} {check.bound:g}  ({check.statistic_name})",
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m suites.pilot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--part", action="append", help="part(s) to pilot (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="pilot seeds, not the tier's (default: 1)")
    parser.add_argument("--device", default="cpu", help="device (default: cpu)")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    pilot(profile, args.part or list(profile.parts), args.seeds, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
