"""The gpu tier's own pieces: which data each part runs on, and its runs as a sweep grid.

The tier runs the claims table (``suites/claims_table.py``) at the ``tiny``, ``smoke`` and
``paper`` profiles (``suites/profiles.py``) on VGG-11 and ResNet-56 (CIFAR-10) and the MLP
(MNIST) (docs/protocol.md); C11 (schedules) runs on VGG-11 and ResNet-56, as in the paper's
Appendix C. Without its paper data a part can run on Fashion-MNIST (``choose_data``).

``python -m suites.gpu.claims --profile paper --device cuda --grid grid.json`` writes the tier's
runs as a sweep grid (``sgdwalk sweep grid.json --out OUT``); ``pytest suites/gpu
--sgdwalk-sweep-dir OUT`` then reads the finished cells instead of training (``--seeds S``
there for ``--sgdwalk-seeds S`` here).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from sgdwalk.claims.pytest_plugin import parse_seeds
from sgdwalk.training.data import DatasetNotFoundError, find_dataset, resolve_dataset
from suites.profiles import GPU_PARTS, GPU_PROFILES, PROFILES, Part, Profile
from suites.tier_plan import DataChoice, paper_data, tier_configs, tier_grid

# The data set every part falls back to without its paper data (Debian's dataset-fashion-mnist).
FALLBACK_DATA: Final = "fashion-mnist"
DATA_CHOICES: Final[tuple[str, ...]] = ("auto", "paper", FALLBACK_DATA)
# The tier's parts, the same in each of its profiles.
PARTS: Final[Mapping[str, Part]] = GPU_PARTS


# ----------------------------------------------------------------------------- data
def choose_data(
    part: Part, mode: str, profile: Profile, data_root: str | None, *, flag: str = "--sgdwalk-gpu-data"
) -> DataChoice:
    """The data for ``part`` under ``flag mode``; raises ``DatasetNotFoundError``.

    auto: the paper's data when found, else Fashion-MNIST for a profile sized for a CPU
    (``not profile.needs_cuda``: its runs keep the code running, they are no evidence about
    the paper's data); a GPU profile's verdicts need the paper's data, so it gets that or an
    error. paper: the paper's data or an error; fashion-mnist: Fashion-MNIST whatever else is
    there. ``flag`` is the option the user gave ``mode`` with, which the error names.
    """
    if mode not in DATA_CHOICES:
        raise ValueError(f"data choice must be one of {DATA_CHOICES}, got {mode!r}")
    paper = paper_data(part)
    fallback = DataChoice(
        FALLBACK_DATA,
        part.image_size,
        True,
        f"{FALLBACK_DATA} in place of {part.paper_data}"
        + (f" (1 channel, zero-padded to {part.image_size}x{part.image_size})" if part.image_size else ""),
    )
    if mode == FALLBACK_DATA:
        resolve_dataset(FALLBACK_DATA, data_root)
        return dataclasses.replace(fallback, note=fallback.note + f", asked for by {flag}")
    if find_dataset(part.paper_data, data_root) is not None:
        return paper
    if mode == "auto" and not profile.needs_cuda:
        resolve_dataset(FALLBACK_DATA, data_root)
        return dataclasses.replace(
            fallback, note=fallback.note + f": the {profile.name} profile's default when {part.paper_data} is missing"
        )
    try:
        resolve_dataset(part.paper_data, data_root)
    except DatasetNotFoundError as error:
        raise DatasetNotFoundError(
            f"{error}\nOr run this tier on {FALLBACK_DATA} (the same networks; 1 channel, padded to 32 "
            f"for the conv nets): {flag} {FALLBACK_DATA}"
        ) from None
    return paper  # found after all (a race with whoever was writing it)


def _seeds(text: str) -> tuple[int, ...]:
    """``--seeds``, read as the tier reads ``--sgdwalk-seeds``, so the grid holds its runs."""
    try:
        return parse_seeds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


def not_found_line(error: DatasetNotFoundError) -> str:
    """The first line of a data set's not-found message: "data set 'cifar10' not found"."""
    return str(error).splitlines()[0].removesuffix(" Searched:").rstrip(".")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m suites.gpu.claims",
        description="Write the GPU tier's runs as a sweep grid for `sgdwalk sweep`.",
    )
    parser.add_argument("--profile", choices=GPU_PROFILES, default="paper", help="size profile (default: paper)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="device of the runs (default: cuda)")
    parser.add_argument(
        "--data",
        choices=DATA_CHOICES,
        default="paper",
        help="paper data, or the fashion-mnist fallback (default: paper)",
    )
    parser.add_argument("--grid", metavar="PATH", required=True, help="grid file to write (.json)")
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help="the seeds of the tier's --sgdwalk-seeds, 2001-2005 or 2001,2002,2003 (default: the profile's)",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    if args.seeds is not None:
        try:
            profile = profile.with_seeds(args.seeds)
        except ValueError as error:
            parser.error(f"--seeds: {error}")
    data = {
        name: (paper_data(part) if args.data != FALLBACK_DATA else DataChoice(FALLBACK_DATA, part.image_size, True, ""))
        for name, part in profile.parts.items()
    }
    configs = tier_configs(profile, args.device, data)
    path = Path(args.grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tier_grid(configs), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(configs)} cells of the {profile.name} profile to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
