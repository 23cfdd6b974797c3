"""``sgdwalk plot RUN``: draw a run's figures (``sgdwalk.runs.plots``) and print their paths.

Matplotlib and the plotting module are imported when the command runs, not when the
parser is built, so that ``sgdwalk --help`` does not pay for them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Final

from sgdwalk.cli.exits import EXIT_FAILED, EXIT_OK, usage_error

# Repeated from sgdwalk.runs.plots (which the parser must not import); a test keeps them equal.
DEFAULT_MAX_STEPS: Final = 60

EPILOG: Final = """\
Figures (into DIR, default RUN/figures):
  walk_<window>.png   the paper's Figures 1-2 per tracked window: the loss along each
                      step drawn iteration after iteration, valley floors joined by a
                      dashed orange line, barriers in red; gradient cosine; distance from
                      initialization. <window> is epoch<E>, or steps<first>-<last> when the
                      run does not know its steps per epoch (a window then ends where the
                      gap between measured steps exceeds the usual one). A window longer than
                      --max-steps is split into pages walk_<window>_p01.png, _p02, ...
  heights.png         height of the iterate above the floor, per step and per window
  barriers.png        barriers crossed per window and their heights relative to the loss
  training.png        training loss, validation accuracy and sharpness per epoch (if any)

Exit codes: 0 figures written, 1 the run has nothing to plot yet, 2 RUN cannot be read or
an option is invalid.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _formats(text: str) -> tuple[str, ...]:
    return tuple(piece.strip() for piece in text.split(",") if piece.strip())


def run_plot(args: argparse.Namespace) -> int:
    run_dir = Path(args.run)
    # Checked before the (slow) matplotlib import, so a typo fails at once.
    if not run_dir.is_dir():
        problem = "is not a directory" if run_dir.exists() else "does not exist"
        return usage_error("plot", f"run directory {run_dir} {problem}")

    from sgdwalk.base.errors import SgdwalkError
    from sgdwalk.runs.plots import plot_run
    from sgdwalk.runs.runlog import cut_record_files

    try:
        paths = plot_run(run_dir, args.out, args.formats, max_steps=args.max_steps)
        cut = cut_record_files(run_dir)
    except (SgdwalkError, ValueError) as error:  # an unreadable run, an unknown figure format
        return usage_error("plot", error)
    for name in cut:
        print(
            f"sgdwalk plot: the last line of {run_dir / name} was cut short by a crash and is left out", file=sys.stderr
        )
    if not paths:
        print(f"sgdwalk plot: {run_dir} has no measured step and no finished epoch: nothing to plot", file=sys.stderr)
        return EXIT_FAILED
    for path in paths:
        print(path)
    return EXIT_OK


def add_parser(subparsers: Any) -> None:
    """Register ``sgdwalk plot``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plot",
        help="draw a run's figures (the paper's walk plots, heights, barriers, training)",
        description="Draw the figures of a run directory written by `sgdwalk walk` and print their paths.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN", help="a run directory written by `sgdwalk walk`")
    parser.add_argument("--out", metavar="DIR", default=None, help="write the figures into DIR (default: RUN/figures)")
    parser.add_argument(
        "--max-steps",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_MAX_STEPS,
        help=f"at most N steps per walk figure; longer windows get several pages (default: {DEFAULT_MAX_STEPS})",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        metavar="FMT[,FMT...]",
        type=_formats,
        default=("png",),
        help="comma-separated file formats matplotlib can write, e.g. png,pdf,svg (default: png)",
    )
    parser.set_defaults(func=run_plot)
