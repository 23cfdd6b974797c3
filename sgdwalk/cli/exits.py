"""The exit codes of every ``sgdwalk`` command, and how a command reports a usage error.

One meaning per code across commands, so a script can branch on them without knowing which
command it ran.
"""

from __future__ import annotations

import sys
from typing import Final

EXIT_OK: Final = 0
# The command ran and its outcome is a failure: a claim regressed, a sweep cell raised,
# a run has nothing to plot yet.
EXIT_FAILED: Final = 1
# argparse's own code for bad flags; also a bad config, grid or report file, a data set not
# found, an unusable run directory, a refused submission: anything the user must change.
EXIT_USAGE: Final = 2
# `sgdwalk walk`: the run diverged (its records are kept).
EXIT_DIVERGED: Final = 3
# The shell's code for a process ended by Ctrl-C (128 + SIGINT).
EXIT_INTERRUPTED: Final = 130


def usage_error(command: str, message: object) -> int:
    """Print ``sgdwalk COMMAND: error: MESSAGE`` to stderr (argparse's form); returns ``EXIT_USAGE``."""
    print(f"sgdwalk {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


__all__ = ["EXIT_DIVERGED", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "usage_error"]
